// Matchers overlap and fsm: matches on known geometry, against a plain-loop IoU reference on
// random crops, the strict threshold, FSM on features and on gate vectors.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <random>

#include "test_ogar_helpers.h"
#include "workbench/geometry.h"

using namespace crmoe_test;

namespace {

std::shared_ptr<wb::Matcher> overlap(double lambda) {
  wb::Params p = plugins().defaults(wb::Kind::Matcher, "overlap");
  p.set("lambda", lambda);
  return plugins().make_matcher("overlap", p);
}

std::shared_ptr<wb::Matcher> fsm(const std::string& source) {
  wb::Params p = plugins().defaults(wb::Kind::Matcher, "fsm");
  p.set("source", source);
  return plugins().make_matcher("fsm", p);
}

wb::Match run(wb::Matcher& m, const View& q, const View& k, std::int64_t grid) {
  const wb::ViewGeometry gq = geometry(q), gk = geometry(k);
  wb::MatchInput in;
  in.grid = grid;
  in.query_view = &gq;
  in.key_view = &gk;
  return m.match(in);
}

}  // namespace

TEST_CASE("matcher overlap: mirrored and shifted views on a known grid") {
  auto m = overlap(0.2);
  CHECK_FALSE(m->per_layer());
  // Image 0: the whole image, the key mirrored: query (r, c) sits on key (r, 1 - c).
  // Image 1: the key crop is the query crop shifted right by 0.1 (patches 0.25 wide): each
  // query patch overlaps the key patch at its own grid position by 0.15 of 0.25 in x, IoU
  // 0.15 / 0.35 = 3/7 > 0.2, and its other neighbour by less.
  const View q{{{0, 0, 1, 1}, {0, 0, 0.5, 0.5}}, {false, false}};
  const View k{{{0, 0, 1, 1}, {0.1, 0, 0.5, 0.5}}, {true, false}};
  const wb::Match r = run(*m, q, k, 2);
  CHECK(at::equal(r.index[0], at::tensor({1, 0, 3, 2}, at::kLong)));
  CHECK(r.valid[0].all().item<bool>());
  CHECK(at::equal(r.index[1], at::tensor({0, 1, 2, 3}, at::kLong)));
  CHECK(at::equal(r.valid[1], at::tensor({1, 1, 1, 1}).to(at::kBool)));
  const RefMatch ref = overlap_match(q, k, 2, 0.2);
  CHECK(ref.index[1] == std::vector<int>{0, 1, 2, 3});
}

TEST_CASE("matcher overlap: random crops and flips agree with a plain-loop IoU argmax") {
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> u(0, 1);
  View q, k;
  const int B = 16, g = 3;
  for (int i = 0; i < B; ++i)
    for (View* v : {&q, &k}) {
      const double w = 0.2 + 0.8 * u(rng), h = 0.2 + 0.8 * u(rng);
      v->boxes.push_back({(1 - w) * u(rng), (1 - h) * u(rng), w, h});
      v->flips.push_back(u(rng) < 0.5);
    }
  for (double lambda : {0.0, 0.2, 0.5}) {
    CAPTURE(lambda);
    const wb::Match r = run(*overlap(lambda), q, k, g);
    const RefMatch ref = overlap_match(q, k, g, lambda);
    int valid = 0;
    for (int i = 0; i < B; ++i)
      for (int p = 0; p < g * g; ++p) {
        CAPTURE(i);
        CAPTURE(p);
        const bool ok = r.valid[i][p].item<bool>();
        CHECK(ok == ref.valid[i][p]);
        if (ref.valid[i][p]) CHECK(r.index[i][p].item<int>() == ref.index[i][p]);
        valid += ok;
      }
    if (lambda == 0.2) {
      CHECK(valid > 0);
      CHECK(valid < B * g * g);
    }
  }
}

TEST_CASE("matcher overlap: an IoU of exactly lambda is not valid (strict threshold)") {
  // One patch per view (grid 1): the key covers the left quarter of the query, IoU 0.25 exactly.
  const View q{{{0, 0, 1, 1}}, {false}};
  const View k{{{0, 0, 0.25, 1}}, {false}};
  CHECK_FALSE(run(*overlap(0.25), q, k, 1).valid[0][0].item<bool>());
  CHECK(run(*overlap(0.2499), q, k, 1).valid[0][0].item<bool>());
  // The default lambda 0.2 against an IoU that is 0.2 in exact arithmetic.
  const View k5{{{0, 0, 0.2, 1}}, {false}};
  CHECK_FALSE(run(*overlap(0.2), q, k5, 1).valid[0][0].item<bool>());
}

TEST_CASE("matcher overlap: needs the views' geometry") {
  wb::MatchInput in;
  in.grid = 2;
  CHECK_THROWS_WITH_AS(overlap(0.2)->match(in), doctest::Contains("geometry"),
                       std::invalid_argument);
}

TEST_CASE("matcher fsm: most cosine-similar key patch, from features or from gate vectors") {
  at::manual_seed(3);
  const std::int64_t B = 2, N = 4;
  // Key features: a known permutation of the query features, rescaled (cosine ignores scale)
  // and slightly perturbed. Key gates: a different permutation, so the source is visible.
  const at::Tensor qf = at::randn({B, N, 6});
  const at::Tensor feature_perm = at::tensor({2, 0, 3, 1}, at::kLong);  // key n = query perm[n]
  const at::Tensor kf = 3 * qf.index_select(1, feature_perm) + 0.01 * at::randn({B, N, 6});
  const at::Tensor qg = at::softmax(at::randn({B, N, 5}) * 3, 2);
  const at::Tensor gate_perm = at::tensor({1, 3, 0, 2}, at::kLong);
  const at::Tensor kg = qg.index_select(1, gate_perm);
  wb::MatchInput in;
  in.grid = 2;
  in.query_features = qf;
  in.key_features = kf;
  in.query_gates = qg;
  in.key_gates = kg;
  // Query m pairs with the key n holding it: n = inverse permutation at m.
  auto inverse = [](const at::Tensor& perm) { return at::argsort(perm); };
  for (const char* source : {"feature", "gate"}) {
    CAPTURE(source);
    auto m = fsm(source);
    CHECK(m->per_layer());
    const wb::Match r = m->match(in);
    const at::Tensor expected = inverse(std::string(source) == "gate" ? gate_perm : feature_perm);
    for (std::int64_t i = 0; i < B; ++i) CHECK(at::equal(r.index[i], expected));
    CHECK(r.valid.all().item<bool>());
    CHECK(r.valid.sizes() == at::IntArrayRef({B, N}));
  }
  wb::MatchInput empty;
  CHECK_THROWS_WITH_AS(fsm("feature")->match(empty), doctest::Contains("patch features"),
                       std::invalid_argument);
}

TEST_CASE("matcher fsm: plain-loop cosine argmax on random vectors") {
  at::manual_seed(4);
  const at::Tensor q = at::randn({3, 9, 4}), k = at::randn({3, 9, 4});
  wb::MatchInput in;
  in.query_features = q;
  in.key_features = k;
  const wb::Match r = fsm("feature")->match(in);
  for (std::int64_t i = 0; i < 3; ++i) {
    const Mat qi = rows(q[i]), ki = rows(k[i]);
    for (std::size_t m = 0; m < qi.size(); ++m) {
      std::size_t best = 0;
      for (std::size_t n = 1; n < ki.size(); ++n)
        if (dot(unit(qi[m]), unit(ki[n])) > dot(unit(qi[m]), unit(ki[best]))) best = n;
      CHECK(r.index[i][static_cast<std::int64_t>(m)].item<std::int64_t>() ==
            static_cast<std::int64_t>(best));
    }
  }
}
