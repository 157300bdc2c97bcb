// Loss plugin `imbalance` (MoCE, docs/methods.md §8): the printed −Σ_i (std / mean)² against
// hand-computed values for each reading, its sum over layers and mean over views, and its
// gradient making the gates sharper.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

#include "built_plugins.h"
#include "workbench/loss.h"
#include "workbench/loss_terms.h"
#include "workbench/registry.h"

namespace {

using wb_test::plugins;

std::shared_ptr<wb::Loss> imbalance(const std::string& over = "experts",
                                    const std::string& vector = "dense",
                                    const std::string& std_kind = "sample", double weight = 1.0) {
  wb::Params p = plugins().defaults(wb::Kind::Loss, "imbalance");
  p.set("weight", weight);
  p.set("over", over);
  p.set("gate_vector", vector);
  p.set("std", std_kind);
  return plugins().make_loss("imbalance", p, wb::LossContext{});
}

// One routing whose images have the given dense and sparse gate vectors [B, E], each repeated
// over `tokens` tokens per image.
wb::Routing routing(const at::Tensor& dense, const at::Tensor& sparse, std::int64_t tokens = 1) {
  wb::Routing r;
  r.probs = dense.repeat_interleave(tokens, 0);
  r.gates = sparse.repeat_interleave(tokens, 0);
  r.tokens_per_image = tokens;
  return r;
}

wb::StepState state_of(std::vector<std::vector<wb::Routing>> views) {
  wb::StepState s;
  for (auto& routings : views) {
    wb::BackboneOutput out;
    out.cls = at::zeros({1, 2}, at::kDouble);
    out.routings = std::move(routings);
    s.online.push_back(std::move(out));
  }
  return s;
}

at::Tensor rows(std::vector<double> v, std::int64_t e) {
  return at::tensor(v, at::kDouble).view({-1, e});
}

}  // namespace

TEST_CASE("imbalance: hand-computed values of every reading") {
  // Three images, two experts. Dense G: (0.9, 0.1), (0.5, 0.5), (0.2, 0.8); sparse (K = 1):
  // (0.9, 0), (0.6, 0), (0, 0.8).
  const at::Tensor dense = rows({0.9, 0.1, 0.5, 0.5, 0.2, 0.8}, 2);
  const at::Tensor sparse = rows({0.9, 0, 0.6, 0, 0, 0.8}, 2);
  const auto one = [&](const std::shared_ptr<wb::Loss>& loss, std::int64_t tokens = 1) {
    return loss->compute(state_of({{routing(dense, sparse, tokens)}})).value.item<double>();
  };
  // Per expert over images, sample variance: expert 0 has mean 8/15 and variance 37/300,
  // CV² = 111/256; expert 1 mean 7/15, same variance, CV² = 111/196.
  CHECK(one(imbalance()) == doctest::Approx(-(111.0 / 256 + 111.0 / 196)).epsilon(1e-12));
  // Population variance: 37/128 + 37/98.
  CHECK(one(imbalance("experts", "dense", "population")) ==
        doctest::Approx(-(37.0 / 128 + 37.0 / 98)).epsilon(1e-12));
  // Per image over experts: 32/25 + 0 + 18/25.
  CHECK(one(imbalance("images")) == doctest::Approx(-2.0).epsilon(1e-12));
  // Sparse vector per expert: 21/25 and 3.
  CHECK(one(imbalance("experts", "sparse")) == doctest::Approx(-3.84).epsilon(1e-12));
  // Per image over the experts of a K = 1 sparse vector: E = 2 with the sample std, E − 1 = 1
  // with the population std, whatever the probability.
  CHECK(one(imbalance("images", "sparse")) == doctest::Approx(-6.0).epsilon(1e-12));
  CHECK(one(imbalance("images", "sparse", "population")) == doctest::Approx(-3.0).epsilon(1e-12));
  // The image's gate vector is read at its first token: 4 tokens per image give the same.
  CHECK(one(imbalance(), 4) == doctest::Approx(one(imbalance())).epsilon(1e-12));

  // An expert nobody chose (sparse, mean 0) contributes 0, not NaN; expert 0: values 0.9, 0.6,
  // 0.7, mean 11/15, sample variance 21/900, CV² = 21/484.
  const at::Tensor unused = rows({0.9, 0, 0.6, 0, 0.7, 0}, 2);
  CHECK(imbalance("experts", "sparse")
            ->compute(state_of({{routing(unused, unused)}}))
            .value.item<double>() == doctest::Approx(-21.0 / 484).epsilon(1e-12));

  // Weighted; summed over layers; averaged over views.
  const auto loss = imbalance("experts", "dense", "sample", 0.01);
  const wb::Routing r = routing(dense, sparse);
  const wb::Routing flat = routing(rows({0.5, 0.5, 0.5, 0.5, 0.5, 0.5}, 2), sparse);
  const double h = -(111.0 / 256 + 111.0 / 196);
  const wb::LossResult two_layers = loss->compute(state_of({{r, r}}));
  CHECK(two_layers.value.item<double>() == doctest::Approx(0.02 * h).epsilon(1e-12));
  CHECK(two_layers.metrics.at("imbalance") == doctest::Approx(2 * h).epsilon(1e-12));
  CHECK(two_layers.metrics.at("confidence") == doctest::Approx((0.9 + 0.5 + 0.8) / 3));
  CHECK(loss->compute(state_of({{r}, {flat}})).value.item<double>() ==
        doctest::Approx(0.01 * h / 2).epsilon(1e-12));
  CHECK(loss->compute(state_of({{}})).value.item<double>() == 0.0);  // dense backbone
}

TEST_CASE("imbalance: its gradient makes the gates sharper") {
  // Four images' gate logits over three experts, mildly different preferences.
  for (const char* over : {"experts", "images"}) {
    CAPTURE(over);
    at::Tensor z = at::tensor(std::vector<double>{0.3, 0.0, -0.2, 0.0, 0.4, 0.1, -0.1, 0.0, 0.2,
                                                  0.2, 0.1, 0.0},
                              at::kDouble)
                       .view({4, 3});
    const auto loss = imbalance(over);
    const at::Tensor first = at::softmax(z, 1);
    const auto entropy = [](const at::Tensor& p) { return -(p * p.log()).sum(1); };
    for (int step = 0; step < 100; ++step) {
      const at::Tensor leaf = z.detach().requires_grad_(true);
      const at::Tensor p = at::softmax(leaf, 1);
      loss->compute(state_of({{routing(p, p)}})).value.backward();
      z = (leaf - 0.5 * leaf.grad()).detach();
    }
    const at::Tensor last = at::softmax(z, 1);
    // Every image ends more confident, with lower entropy, and keeps its preferred expert.
    CHECK((std::get<0>(last.max(1)) > std::get<0>(first.max(1)) + 0.1).all().item<bool>());
    CHECK((entropy(last) < entropy(first)).all().item<bool>());
    CHECK(at::equal(last.argmax(1), first.argmax(1)));
  }
}

TEST_CASE(
    "sum_over_layers_mean_over_views (workbench/loss_terms.h): the form distill and imbalance "
    "share") {
  // A routing's term is its tokens_per_image here: views (1, 2) and (3, 4) of two layers give
  // (1 + 3) / 2 + (2 + 4) / 2 = 5.
  auto tagged = [](std::int64_t t) {
    wb::Routing r;
    r.tokens_per_image = t;
    return r;
  };
  std::vector<std::int64_t> seen;
  const auto term = [&](const wb::Routing& r) {
    seen.push_back(r.tokens_per_image);
    return at::scalar_tensor(static_cast<double>(r.tokens_per_image), at::kDouble);
  };
  const at::Tensor total = wb::sum_over_layers_mean_over_views(
      state_of({{tagged(1), tagged(2)}, {tagged(3), tagged(4)}}), "test", term);
  CHECK(total.item<double>() == doctest::Approx(5.0).epsilon(1e-15));
  CHECK((total.scalar_type() == at::kDouble));  // the features' type
  CHECK(seen == std::vector<std::int64_t>{1, 2, 3, 4});
  // A dense backbone: an exact zero; no online output: an error naming the loss.
  CHECK(wb::sum_over_layers_mean_over_views(state_of({{}, {}}), "test", term).item<double>() ==
        0.0);
  CHECK_THROWS_WITH_AS(wb::sum_over_layers_mean_over_views(wb::StepState{}, "imbalance", term),
                       "loss imbalance: no online output", std::logic_error);
}
