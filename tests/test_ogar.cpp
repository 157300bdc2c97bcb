// Loss ogar on hand-built routings: CLS and patch InfoNCE against plain-loop references (overlap
// matching, FSM per layer, dense / sparse gate vectors, no negatives, two ranks), the empty-match
// case (exact 0, finite gradients), gradients to the online gates only, weight 0, dense backbones.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "test_ogar_helpers.h"

using namespace crmoe_test;

namespace {

// Three images: image 0 the whole picture in both views, the key view mirrored (every patch
// matches, IoU 1); image 1 two partly overlapping crops (some patches match); image 2 two
// disjoint crops (none match).
HandStep mixed_step(std::uint64_t seed = 1) {
  HandStep h;
  h.views[0] = View{{{0, 0, 1, 1}, {0.05, 0.1, 0.6, 0.7}, {0, 0, 0.4, 0.4}}, {false, false, true}};
  h.views[1] =
      View{{{0, 0, 1, 1}, {0.3, 0.2, 0.65, 0.75}, {0.6, 0.55, 0.4, 0.45}}, {true, false, false}};
  h.make(seed);
  return h;
}

wb::Params overlap_params(double lambda = 0.2) {
  wb::Params p = plugins().defaults(wb::Kind::Matcher, "overlap");
  p.set("lambda", lambda);
  return p;
}

std::function<RefMatch(int, std::int64_t)> overlap_ref(const HandStep& h, double lambda = 0.2) {
  return [&h, lambda](int a, std::int64_t) {
    return overlap_match(h.views[a], h.views[1 - a], static_cast<int>(h.g), lambda);
  };
}

void check_against(const wb::LossResult& r, const OgarRef& ref) {
  CHECK(r.value.item<double>() == doctest::Approx(ref.value).epsilon(1e-5));
  CHECK(r.metrics.at("cls") == doctest::Approx(ref.cls).epsilon(1e-5));
  CHECK(r.metrics.at("patch") == doctest::Approx(ref.patch).epsilon(1e-5));
  CHECK(r.metrics.at("valid_fraction") == doctest::Approx(ref.valid_fraction));
}

}  // namespace

TEST_CASE("ogar: the hand-built batch has valid and invalid pairs") {
  const HandStep h = mixed_step();
  const RefMatch m = overlap_match(h.views[0], h.views[1], 2, 0.2);
  // Image 0: mirrored whole image, every patch matches its mirror.
  CHECK(m.index[0] == std::vector<int>{1, 0, 3, 2});
  CHECK(m.valid[0] == std::vector<bool>{true, true, true, true});
  int image1 = 0;
  for (bool v : m.valid[1]) image1 += v;
  CHECK(image1 > 0);
  CHECK(image1 < 4);
  CHECK(m.valid[2] == std::vector<bool>{false, false, false, false});
}

TEST_CASE("ogar: CLS and patch InfoNCE with overlap matching equal the plain-loop reference") {
  const HandStep h = mixed_step();
  OneRank comm;
  for (int vector : {0, 1, 2}) {  // sparse, dense, logits
    OgarSettings s;
    s.dense = vector == 1;
    s.logits = vector == 2;
    s.weight = 0.5;
    CAPTURE(vector);
    auto loss = make_ogar(plugins(), s, "overlap", overlap_params(), h.g);
    const wb::LossResult r = loss->compute(h.state(&comm));
    const OgarRef ref = ogar_reference(h, s, overlap_ref(h));
    check_against(r, ref);
    CHECK(ref.patch > 0);
    CHECK(r.metrics.count("cls_moe0") == 1);
    CHECK(r.metrics.count("patch_moe1") == 1);
  }
}

TEST_CASE("ogar: alpha and lambda change the loss as eq. 9 and the strict threshold say") {
  const HandStep h = mixed_step(3);
  OneRank comm;
  for (double alpha : {0.0, 0.3, 1.0})
    for (double lambda : {0.05, 0.2, 0.5}) {
      OgarSettings s;
      s.alpha = alpha;
      s.weight = 1;
      CAPTURE(alpha);
      CAPTURE(lambda);
      auto loss = make_ogar(plugins(), s, "overlap", overlap_params(lambda), h.g);
      check_against(loss->compute(h.state(&comm)), ogar_reference(h, s, overlap_ref(h, lambda)));
    }
}

TEST_CASE("ogar: negatives and labels over two ranks (keys gathered, own index offset by rank)") {
  const HandStep h = mixed_step(4);
  SecondOfTwo comm;
  OgarSettings s;
  s.weight = 1;
  s.second_of_two = true;
  auto loss = make_ogar(plugins(), s, "overlap", overlap_params(), h.g);
  const wb::LossResult r = loss->compute(h.state(&comm));
  check_against(r, ogar_reference(h, s, overlap_ref(h)));
  // The same batch on one rank has fewer negatives, hence a different loss.
  OgarSettings one = s;
  one.second_of_two = false;
  CHECK(ogar_reference(h, one, overlap_ref(h)).value != doctest::Approx(r.value.item<double>()));
}

TEST_CASE("ogar: without negatives the loss is the negative cosine of the matched pairs") {
  const HandStep h = mixed_step(5);
  OneRank comm;
  OgarSettings s;
  s.negatives = false;
  s.weight = 1;
  auto loss = make_ogar(plugins(), s, "overlap", overlap_params(), h.g);
  const wb::LossResult r = loss->compute(h.state(&comm));
  const OgarRef ref = ogar_reference(h, s, overlap_ref(h));
  check_against(r, ref);
  // Cosines of non-negative vectors: each term lies in [-1, 0], two directions per layer.
  CHECK(ref.cls < 0);
  CHECK(ref.cls >= -2.0 * h.layers);
}

TEST_CASE("ogar: no valid pair gives a patch term of exactly 0 and finite gradients") {
  HandStep h;
  // Disjoint crops for every image: nothing overlaps.
  h.views[0] = View{{{0, 0, 0.4, 0.4}, {0, 0, 0.3, 0.3}}, {false, true}};
  h.views[1] = View{{{0.6, 0.6, 0.4, 0.4}, {0.5, 0.5, 0.5, 0.5}}, {false, false}};
  h.B = 2;
  h.make(6);
  OneRank comm;
  for (bool negatives : {true, false}) {
    OgarSettings s;
    s.alpha = 1;  // the patch term alone
    s.weight = 1;
    s.negatives = negatives;
    CAPTURE(negatives);
    auto loss = make_ogar(plugins(), s, "overlap", overlap_params(), h.g);
    const wb::StepState st = h.state(&comm);
    const wb::LossResult r = loss->compute(st);
    CHECK(r.value.item<double>() == 0.0);
    CHECK(r.metrics.at("patch") == 0.0);
    CHECK(r.metrics.at("valid_fraction") == 0.0);
    CHECK(std::isfinite(r.metrics.at("cls")));
    for (auto& v : h.online_probs)
      for (auto& p : v) p.mutable_grad() = at::Tensor();
    r.value.backward();
    for (const auto& v : h.online_probs)
      for (const auto& p : v) {
        REQUIRE(p.grad().defined());
        CHECK(at::isfinite(p.grad()).all().item<bool>());
        CHECK(p.grad().abs().max().item<double>() == 0.0);
      }
  }
}

TEST_CASE("ogar: gradients reach the online gate vectors, never the momentum ones") {
  const HandStep h = mixed_step(7);
  OneRank comm;
  OgarSettings s;
  s.weight = 1;
  auto loss = make_ogar(plugins(), s, "overlap", overlap_params(), h.g);
  const wb::LossResult r = loss->compute(h.state(&comm));
  REQUIRE(r.value.requires_grad());
  r.value.backward();
  for (const auto& v : h.online_probs)
    for (const auto& p : v) {
      REQUIRE(p.grad().defined());
      CHECK(p.grad().abs().sum().item<double>() > 0);
    }
  for (const auto& v : h.momentum_probs)
    for (const auto& p : v) CHECK_FALSE(p.grad().defined());
}

TEST_CASE("ogar: FSM matches per layer (gate source) and all pairs count") {
  const HandStep h = mixed_step(8);
  OneRank comm;
  OgarSettings s;
  s.weight = 1;
  wb::Params mp = plugins().defaults(wb::Kind::Matcher, "fsm");
  mp.set("source", std::string("gate"));
  auto loss = make_ogar(plugins(), s, "fsm", mp, h.g);
  const wb::LossResult r = loss->compute(h.state(&comm));
  // Reference match: the most cosine-similar key gate vector of the same image, per layer.
  auto fsm_ref = [&h, &s](int a, std::int64_t l) {
    const auto Q = h.vectors(true, a, l, s.dense), K = h.vectors(false, 1 - a, l, s.dense);
    RefMatch m;
    for (std::size_t i = 0; i < Q.size(); ++i) {
      std::vector<int> idx;
      for (std::size_t q = 1; q < Q[i].size(); ++q) {
        int best = 0;
        for (std::size_t n = 1; n < K[i].size(); ++n)
          if (dot(Q[i][q], K[i][n]) > dot(Q[i][q], K[i][1 + best])) best = static_cast<int>(n - 1);
        idx.push_back(best);
      }
      m.index.push_back(idx);
      m.valid.push_back(std::vector<bool>(idx.size(), true));
    }
    return m;
  };
  check_against(r, ogar_reference(h, s, fsm_ref));
  CHECK(r.metrics.at("valid_fraction") == 1.0);
}

TEST_CASE("ogar: weight 0 still returns an addable value and the unweighted terms") {
  const HandStep h = mixed_step(9);
  OneRank comm;
  OgarSettings s;
  s.weight = 0;
  auto loss = make_ogar(plugins(), s, "overlap", overlap_params(), h.g);
  const wb::LossResult r = loss->compute(h.state(&comm));
  REQUIRE(r.value.defined());
  CHECK(r.value.dim() == 0);
  CHECK(r.value.item<double>() == 0.0);
  OgarSettings one = s;
  one.weight = 1;
  CHECK(r.metrics.at("cls") == doctest::Approx(ogar_reference(h, one, overlap_ref(h)).cls));
}

TEST_CASE("ogar: requirements, a dense backbone and a bad matcher output") {
  OgarSettings s;
  auto loss = make_ogar(plugins(), s, "overlap", overlap_params(), 2);
  const wb::LossRequirements need = loss->requirements();
  CHECK(need.views == 2);
  CHECK(need.momentum_encoder);
  CHECK_FALSE(need.freeze_patch_embedding);

  // No MoE layer: exactly 0, defined, no throw.
  HandStep h = mixed_step(10);
  h.layers = 0;
  h.make(10);
  OneRank comm;
  const wb::LossResult r = loss->compute(h.state(&comm));
  CHECK(r.value.item<double>() == 0.0);

  // Images that were never given geometry: the overlap matcher says what it needs.
  HandStep g = mixed_step(11);
  wb::StepState st = g.state(&comm);
  st.batch = nullptr;
  CHECK_THROWS_WITH_AS(loss->compute(st), doctest::Contains("geometry"), std::invalid_argument);
}

namespace {

// Two images, one MoE layer, 2 x 2 patches, 4 experts: image 0 is the whole picture in both
// views (every patch pairs with itself, IoU 1), image 1 two disjoint crops (no patch pairs). All
// tokens of image 0 have the gate probabilities (0.5, 0.3, 0.1, 0.1), those of image 1
// (0.1, 0.1, 0.5, 0.3), in both encoders: the sparse vectors of the two images are orthogonal,
// the same image's are equal.
HandStep half_valid_step() {
  HandStep h;
  h.B = 2;
  h.layers = 1;
  h.views[0] = View{{{0, 0, 1, 1}, {0, 0, 0.4, 0.4}}, {false, false}};
  h.views[1] = View{{{0, 0, 1, 1}, {0.6, 0.6, 0.4, 0.4}}, {false, false}};
  h.make(12);
  const at::Tensor image0 = at::tensor({0.5, 0.3, 0.1, 0.1}, at::kFloat);
  const at::Tensor image1 = at::tensor({0.1, 0.1, 0.5, 0.3}, at::kFloat);
  const at::Tensor probs = at::cat({image0.expand({5, 4}), image1.expand({5, 4})});
  for (int v = 0; v < 2; ++v) {
    h.online_probs[v][0] = probs.clone().requires_grad_(true);
    h.momentum_probs[v][0] = probs.clone();
  }
  return h;
}

}  // namespace

TEST_CASE("ogar: the patch mean over all patches (eq. 8) against a hand computation") {
  const HandStep h = half_valid_step();
  OneRank comm;
  // A valid pair's InfoNCE: positive cosine 1, one negative of cosine 0, tau 0.2, times 2 tau:
  // 0.4 log(1 + e^-5). Image 0 has 4 valid pairs of the 8 patches of the batch, per direction.
  const double pair = 0.4 * std::log1p(std::exp(-5.0));
  for (bool all : {true, false}) {
    OgarSettings s;
    s.alpha = 1;
    s.weight = 1;
    s.mean_all = all;
    CAPTURE(all);
    auto loss = make_ogar(plugins(), s, "overlap", overlap_params(), h.g);
    const wb::LossResult r = loss->compute(h.state(&comm));
    CHECK(r.metrics.at("valid_fraction") == doctest::Approx(0.5));
    // Two directions; "all" divides the 4 pairs' sum by 8 patches, "valid" by the 4 pairs.
    const double expected = 2 * 4 * pair / (all ? 8.0 : 4.0);
    CHECK(r.metrics.at("patch") == doctest::Approx(expected).epsilon(1e-5));
    CHECK(r.value.item<double>() == doctest::Approx(expected).epsilon(1e-5));
    check_against(r, ogar_reference(h, s, overlap_ref(h)));
  }
  // "valid" = "all" / valid fraction: the paper's term is the other reading weighted down by it.
  // Without negatives, a valid pair contributes -cos = -1: -4 / 8 per direction ("all").
  OgarSettings s;
  s.alpha = 1;
  s.weight = 1;
  s.negatives = false;
  auto loss = make_ogar(plugins(), s, "overlap", overlap_params(), h.g);
  CHECK(loss->compute(h.state(&comm)).metrics.at("patch") == doctest::Approx(-1.0));
}

TEST_CASE("ogar: gate_vector = \"logits\" needs a gate that reports its logits") {
  HandStep h = mixed_step(14);
  OneRank comm;
  OgarSettings s;
  s.logits = true;
  auto loss = make_ogar(plugins(), s, "overlap", overlap_params(), h.g);
  wb::StepState st = h.state(&comm);
  for (auto& out : st.online)
    for (auto& r : out.routings) r.logits = at::Tensor();
  CHECK_THROWS_WITH_AS(loss->compute(st), doctest::Contains("no logits"), std::invalid_argument);
}
