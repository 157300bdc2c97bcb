// Gate plugins noisy_topk, fixed and cluster, loaded from the build's plugin folder and checked
// against hand-worked routings and plain reference loops.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

#include "built_plugins.h"
#include "workbench/gate.h"
#include "workbench/registry.h"

namespace {

using wb_test::plugins;

std::shared_ptr<wb::Gate> make_gate(const std::string& name, wb::Params p, std::int64_t dim,
                                    std::int64_t experts) {
  return plugins().make_gate(name, p, wb::GateShape{dim, experts, 0});
}

wb::Params defaults(const std::string& name) {
  return plugins().defaults(wb::Kind::Gate, name);
}

void set_param(torch::nn::Module& m, const std::string& name, const at::Tensor& value) {
  at::NoGradGuard no_grad;
  m.named_parameters()[name].copy_(value);
}

wb::GateInput input_for(std::int64_t images, std::int64_t tokens_per_image, bool training) {
  wb::GateInput in;
  in.image = at::arange(images, at::kLong).repeat_interleave(tokens_per_image);
  in.tokens_per_image = tokens_per_image;
  in.training = training;
  return in;
}

std::vector<std::vector<long>> rows_of(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kLong).contiguous();
  std::vector<std::vector<long>> out(c.size(0));
  for (std::int64_t i = 0; i < c.size(0); ++i)
    for (std::int64_t j = 0; j < c.size(1); ++j) out[i].push_back(c[i][j].item<long>());
  return out;
}

using Rows = std::vector<std::vector<long>>;

// Six tokens over three experts; with W = identity the logits are these rows. Preferences
// (first, second): t0 (0,1) t1 (0,2) t2 (0,1) t3 (1,0) t4 (2,0) t5 (0,2); largest probability
// order t5 > t2 > t4 > t3 > t1 > t0.
const std::vector<double> kLogits = {1.0, 0.5, 0.0, 1.2, 0.0, 0.5, 3.0, 1.0, 0.0,
                                     0.5, 1.5, 0.0, 1.0, 0.0, 2.0, 4.0, 0.0, 1.0};

at::Tensor six_tokens() {
  return at::tensor(kLogits, at::kDouble).view({6, 3});
}

wb::Routing route_six(wb::Params p) {
  auto gate = make_gate("noisy_topk", p, 3, 3);
  gate->to(at::kDouble);
  set_param(*gate, "weight", at::eye(3, at::kDouble));
  return gate->route(six_tokens(), input_for(6, 1, /*training=*/false));
}

}  // namespace

TEST_CASE("noisy_topk: top-k sets and combine weights of a hand-made input (eval, no noise)") {
  wb::Params p = defaults("noisy_topk");
  const wb::Routing r = route_six(p);
  CHECK(rows_of(r.experts) == Rows{{0, 1}, {0, 2}, {0, 1}, {1, 0}, {2, 0}, {0, 2}});
  CHECK(r.kept.all().item<bool>());  // dropless by default
  for (int t = 0; t < 6; ++t) {
    double z = 0;
    for (int e = 0; e < 3; ++e) z += std::exp(kLogits[t * 3 + e]);
    for (int j = 0; j < 2; ++j) {
      const long e = r.experts[t][j].item<long>();
      const double p_e = std::exp(kLogits[t * 3 + e]) / z;
      // Combine weight = softmax probability, not renormalised over the top 2.
      CHECK(r.weights[t][j].item<double>() == doctest::Approx(p_e).epsilon(1e-12));
      CHECK(r.gates[t][e].item<double>() == doctest::Approx(p_e).epsilon(1e-12));
    }
    for (int e = 0; e < 3; ++e) {
      CHECK(r.probs[t][e].item<double>() ==
            doctest::Approx(std::exp(kLogits[t * 3 + e]) / z).epsilon(1e-12));
      CHECK(r.logits[t][e].item<double>() == doctest::Approx(kLogits[t * 3 + e]).epsilon(1e-12));
    }
    const long unused = 3 - r.experts[t][0].item<long>() - r.experts[t][1].item<long>();
    CHECK(r.gates[t][unused].item<double>() == 0.0);
  }
  CHECK(r.aux.count("importance") == 1);
  CHECK(r.aux.count("load") == 0);  // no noise in eval: no load loss
}

TEST_CASE("noisy_topk: capacity drops by choice rank, then position or BPR priority") {
  wb::Params p = defaults("noisy_topk");
  p.set("eval_capacity_factor", 0.5);  // C = ceil(6 * 2 * 0.5 / 3) = 2
  SUBCASE("tokens in order") {
    const wb::Routing r = route_six(p);
    CHECK(rows_of(r.kept) == Rows{{1, 1}, {1, 1}, {0, 0}, {1, 0}, {1, 0}, {0, 0}});
    CHECK(rows_of(r.experts) == Rows{{0, 1}, {0, 2}, {0, 1}, {1, 0}, {2, 0}, {0, 2}});
    CHECK(r.weights[2][0].item<double>() == 0.0);
    CHECK(r.weights[3][1].item<double>() == 0.0);
    CHECK(r.weights[3][0].item<double>() > 0.5);
  }
  SUBCASE("batch prioritized routing") {
    p.set("bpr", true);
    const wb::Routing r = route_six(p);
    CHECK(rows_of(r.kept) == Rows{{0, 0}, {0, 0}, {1, 1}, {1, 0}, {1, 0}, {1, 1}});
  }
  SUBCASE("groups of 3 tokens: C = 1 per group") {
    p.set("group_size", std::int64_t{3});
    const wb::Routing r = route_six(p);
    CHECK(rows_of(r.kept) == Rows{{1, 1}, {0, 1}, {0, 0}, {1, 0}, {1, 0}, {1, 0}});
  }
  SUBCASE("groups of 4 tokens: C = 2, the last group of 2 gets C = 1") {
    p.set("group_size", std::int64_t{4});
    const wb::Routing r = route_six(p);
    CHECK(rows_of(r.kept) == Rows{{1, 1}, {1, 1}, {0, 0}, {1, 0}, {1, 0}, {1, 0}});
  }
  SUBCASE("the training factor is separate") {
    p.set("capacity_factor", 3.0);
    p.set("eval_capacity_factor", 0.5);
    CHECK(rows_of(route_six(p).kept) == Rows{{1, 1}, {1, 1}, {0, 0}, {1, 0}, {1, 0}, {0, 0}});
  }
}

TEST_CASE("noisy_topk: eval capacity defaults to the training capacity factor") {
  wb::Params p = defaults("noisy_topk");
  p.set("capacity_factor", 0.5);
  CHECK(rows_of(route_six(p).kept) == Rows{{1, 1}, {1, 1}, {0, 0}, {1, 0}, {1, 0}, {0, 0}});
}

TEST_CASE("noisy_topk: importance and load losses equal a reference loop") {
  const int T = 7, D = 4, E = 5, k = 2;
  wb::Params p = defaults("noisy_topk");
  p.set("k", std::int64_t{k});
  p.set("noise_std", 1.5);
  auto gate = make_gate("noisy_topk", p, D, E);
  gate->to(at::kDouble);
  at::manual_seed(3);
  const at::Tensor x = at::randn({T, D}, at::kDouble);
  const at::Tensor W = gate->named_parameters()["weight"].detach();

  at::manual_seed(11);
  const wb::Routing r = gate->route(x, input_for(T, 1, /*training=*/true));
  at::manual_seed(11);  // the gate's only random draw is its logit noise: draw it again
  const at::Tensor noise = at::randn({T, E}, at::kDouble);

  const double sigma = 1.5 / E;
  std::vector<double> clean(T * E), noisy(T * E), prob(T * E);
  for (int t = 0; t < T; ++t) {
    double z = 0;
    for (int e = 0; e < E; ++e) {
      double s = 0;
      for (int d = 0; d < D; ++d) s += W[e][d].item<double>() * x[t][d].item<double>();
      clean[t * E + e] = s;
      noisy[t * E + e] = s + sigma * noise[t][e].item<double>();
      z += std::exp(noisy[t * E + e]);
    }
    for (int e = 0; e < E; ++e) prob[t * E + e] = std::exp(noisy[t * E + e]) / z;
  }
  for (int t = 0; t < T; ++t)
    for (int e = 0; e < E; ++e)
      REQUIRE(r.probs[t][e].item<double>() == doctest::Approx(prob[t * E + e]).epsilon(1e-12));

  auto cv2 = [](const std::vector<double>& v) {  // population variance / mean²
    const double mean = std::accumulate(v.begin(), v.end(), 0.0) / v.size();
    double var = 0;
    for (double a : v) var += (a - mean) * (a - mean);
    var /= v.size();
    return var / (mean * mean);
  };
  std::vector<double> importance(E, 0.0), load(E, 0.0);
  for (int t = 0; t < T; ++t) {
    std::vector<double> row(noisy.begin() + t * E, noisy.begin() + (t + 1) * E);
    std::sort(row.begin(), row.end(), std::greater<double>());
    const double threshold = row[k - 1];
    for (int e = 0; e < E; ++e) {
      importance[e] += prob[t * E + e];
      const double z = (threshold - clean[t * E + e]) / sigma;
      load[e] += (1.0 - 0.5 * (1.0 + std::erf(z / std::sqrt(2.0)))) / T;
    }
  }
  REQUIRE(r.aux.count("load") == 1);
  CHECK(r.aux.at("importance").item<double>() == doctest::Approx(cv2(importance)).epsilon(1e-10));
  CHECK(r.aux.at("load").item<double>() == doctest::Approx(cv2(load)).epsilon(1e-10));
  CHECK(r.aux.at("load").item<double>() > 0);

  // importance = "clean": the same sum over softmax(W·x) without the noise.
  p.set("importance", std::string("clean"));
  auto clean_gate = make_gate("noisy_topk", p, D, E);
  clean_gate->to(at::kDouble);
  {
    at::NoGradGuard no_grad;
    clean_gate->named_parameters()["weight"].copy_(W);
  }
  const wb::Routing rc = clean_gate->route(x, input_for(T, 1, /*training=*/true));
  std::vector<double> clean_importance(E, 0.0);
  for (int t = 0; t < T; ++t) {
    double z = 0;
    for (int e = 0; e < E; ++e) z += std::exp(clean[t * E + e]);
    for (int e = 0; e < E; ++e) clean_importance[e] += std::exp(clean[t * E + e]) / z;
  }
  CHECK(rc.aux.at("importance").item<double>() ==
        doctest::Approx(cv2(clean_importance)).epsilon(1e-10));
  CHECK(rc.aux.at("importance").item<double>() != doctest::Approx(cv2(importance)).epsilon(1e-6));
}

TEST_CASE("noisy_topk: noise only in training, and gradients reach the router") {
  wb::Params p = defaults("noisy_topk");
  auto gate = make_gate("noisy_topk", p, 6, 4);
  const at::Tensor x = at::randn({20, 6});
  const auto a = gate->route(x, input_for(20, 1, false)),
             b = gate->route(x, input_for(20, 1, false));
  CHECK(at::equal(a.probs, b.probs));
  CHECK(at::equal(a.experts, b.experts));
  const auto c = gate->route(x, input_for(20, 1, true)), d = gate->route(x, input_for(20, 1, true));
  CHECK_FALSE(at::allclose(c.probs, d.probs));
  CHECK_FALSE(at::allclose(c.probs, a.probs));
  // The logits reported are the noisy ones that routed.
  CHECK(at::allclose(at::softmax(c.logits, 1), c.probs));

  (c.weights.sum() + c.aux.at("importance") + c.aux.at("load")).backward();
  const at::Tensor g = gate->named_parameters()["weight"].grad();
  REQUIRE(g.defined());
  CHECK(g.abs().sum().item<double>() > 0);
}

TEST_CASE("noisy_topk: k above the number of experts is refused") {
  wb::Params p = defaults("noisy_topk");
  p.set("k", std::int64_t{5});
  CHECK_THROWS_WITH_AS(make_gate("noisy_topk", p, 4, 4),
                       doctest::Contains("k = 5 must be between 1 and the number of experts"),
                       std::invalid_argument);
}

TEST_CASE("fixed: view i goes to expert i, in training and evaluation") {
  wb::Params p = defaults("fixed");
  auto gate = make_gate("fixed", p, 4, 2);
  CHECK(gate->k() == 1);
  const at::Tensor x = at::randn({6, 4});
  wb::GateInput in = input_for(3, 2, true);
  in.view = at::tensor(std::vector<long>{0, 1, 1}, at::kLong);

  wb::Routing r = gate->route(x, in);
  CHECK(rows_of(r.experts) == Rows{{0}, {0}, {1}, {1}, {1}, {1}});
  CHECK(at::equal(r.weights, at::ones({6, 1})));
  CHECK(r.kept.all().item<bool>());
  CHECK(at::equal(r.probs.argmax(1), r.experts.squeeze(1)));
  CHECK(r.probs.sum(1).eq(1).all().item<bool>());
  CHECK(r.aux.empty());

  // Evaluation routes by view as well: the view an evaluator claims is the path it measures.
  in.training = false;
  CHECK(rows_of(gate->route(x, in).experts) == Rows{{0}, {0}, {1}, {1}, {1}, {1}});
  in.view = at::full({3}, 1, at::kLong);
  CHECK(rows_of(gate->route(x, in).experts) == Rows{{1}, {1}, {1}, {1}, {1}, {1}});

  in.view = at::Tensor();  // no views: everything is view 0
  CHECK(rows_of(gate->route(x, in).experts) == Rows{{0}, {0}, {0}, {0}, {0}, {0}});
  in.view = at::tensor(std::vector<long>{0, 2, 1}, at::kLong);
  CHECK_THROWS_WITH_AS(gate->route(x, in), doctest::Contains("view index 2 has no expert"),
                       std::invalid_argument);
}

TEST_CASE("cluster: one routing per image from the clustering's centroids") {
  const int B = 4, N = 3, D = 5, Dc = 6, E = 4, clusters = 3;
  wb::Params p = defaults("cluster");
  CHECK(p.integer("k") == 1);
  CHECK_THROWS_WITH_AS(make_gate("cluster", p, D, E), doctest::Contains("set data.clusters"),
                       std::invalid_argument);
  // Centroids of another width than the tokens: the gate reads C, never the tokens.
  const at::Tensor centroids = at::randn({clusters, Dc});
  wb::GateShape shape{D, E, 0};
  shape.centroids = centroids;
  auto gate = plugins().make_gate("cluster", p, shape);
  gate->to(at::kDouble);
  CHECK(gate->named_parameters().size() == 1u);  // W_g only: C is fixed
  const at::Tensor C = gate->named_buffers()["centroids"];
  CHECK(at::equal(C.to(at::kFloat), centroids));
  const at::Tensor x = at::randn({B * N, D}, at::kDouble);
  wb::GateInput in = input_for(B, N, false);
  in.cluster = at::tensor(std::vector<long>{2, 0, 2, 1}, at::kLong);

  const wb::Routing r = gate->route(x, in);
  const at::Tensor W = gate->named_parameters()["weight"].detach();
  REQUIRE(W.sizes() == at::IntArrayRef{E, Dc});
  for (int b = 0; b < B; ++b) {
    const long c = in.cluster[b].item<long>();
    std::vector<double> logit(E);
    double z = 0;
    for (int e = 0; e < E; ++e) {
      logit[e] = 0;
      for (int d = 0; d < Dc; ++d) logit[e] += W[e][d].item<double>() * C[c][d].item<double>();
      z += std::exp(logit[e]);
    }
    const long best = std::max_element(logit.begin(), logit.end()) - logit.begin();
    for (int n = 0; n < N; ++n) {
      CHECK(r.experts[b * N + n][0].item<long>() == best);
      CHECK(r.weights[b * N + n][0].item<double>() ==
            doctest::Approx(std::exp(logit[best]) / z).epsilon(1e-6));
      for (int e = 0; e < E; ++e)
        CHECK(r.probs[b * N + n][e].item<double>() ==
              doctest::Approx(std::exp(logit[e]) / z).epsilon(1e-6));
    }
  }
  CHECK(at::equal(r.experts[0], r.experts[2 * N]));  // same cluster, same expert
  CHECK(r.aux.empty());  // MoCE's regulariser is the imbalance loss, not V-MoE's terms

  in.training = true;  // noise per image: still one routing per image
  const wb::Routing noisy = gate->route(x, in);
  CHECK(noisy.experts.view({B, N})
            .eq(noisy.experts.view({B, N}).select(1, 0).unsqueeze(1))
            .all()
            .item<bool>());

  in.cluster = at::Tensor();
  CHECK_THROWS_WITH_AS(gate->route(x, in), doctest::Contains("the batch has no cluster ids"),
                       std::invalid_argument);
  in.cluster = at::tensor(std::vector<long>{0, 1, 3, 0}, at::kLong);
  CHECK_THROWS_WITH_AS(gate->route(x, in), doctest::Contains("cluster id 3 is outside"),
                       std::invalid_argument);
}
