// MoCE's distillation (docs/methods.md §8): MoE layers report every expert's output when asked
// (RoutingContext::expert_outputs), and the `distill` loss against a plain re-computation of
// each reading, with the teacher side fixed by default.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "built_plugins.h"
#include "workbench/loss.h"
#include "workbench/moe_layer.h"
#include "workbench/registry.h"

namespace {

using wb_test::plugins;

std::shared_ptr<wb::Loss> distill(const std::string& experts, const std::string& distance,
                                  bool teacher_gradient = false) {
  wb::Params p = plugins().defaults(wb::Kind::Loss, "distill");
  p.set("weight", 1.0);
  p.set("experts", experts);
  p.set("distance", distance);
  p.set("teacher_gradient", teacher_gradient);
  return plugins().make_loss("distill", p, wb::LossContext{});
}

wb::StepState one_view(const wb::Routing& r) {
  wb::StepState s;
  wb::BackboneOutput out;
  out.cls = at::zeros({1, 2}, at::kDouble);
  out.routings = {r};
  s.online.push_back(out);
  return s;
}

}  // namespace

TEST_CASE("MoeLayer: expert_outputs holds every expert's MLP on every token, when asked") {
  at::manual_seed(4);
  const std::int64_t B = 2, N = 3, D = 4, H = 6, E = 3;
  wb::Params gp = plugins().defaults(wb::Kind::Gate, "noisy_topk");
  gp.set("k", std::int64_t{1});
  auto layer = std::make_shared<wb::MoeLayer>(
      D, H, E, plugins().make_gate("noisy_topk", gp, wb::GateShape{D, E, 0}));
  layer->to(at::kDouble);
  const at::Tensor x = at::randn({B, N, D}, at::kDouble);
  wb::RoutingContext context;
  context.training = false;
  CHECK_FALSE(layer->forward(x, context).second.expert_outputs.defined());
  context.expert_outputs = true;
  auto [y, r] = layer->forward(x, context);
  REQUIRE(r.expert_outputs.sizes() == at::IntArrayRef{E, B * N, D});
  const at::Tensor tokens = x.reshape({B * N, D});
  for (std::int64_t e = 0; e < E; ++e) {
    const at::Tensor plain =
        at::gelu(tokens.mm(layer->w1_[e]) + layer->b1_[e]).mm(layer->w2_[e]) + layer->b2_[e];
    CHECK(at::allclose(r.expert_outputs[e], plain, 1e-10, 1e-12));
  }
  // The layer's output is the routed expert's output times its combine weight.
  const at::Tensor flat = y.reshape({B * N, D});
  for (std::int64_t t = 0; t < B * N; ++t)
    CHECK(at::allclose(flat[t],
                       r.weights[t][0] * r.expert_outputs[r.experts[t][0].item<std::int64_t>()][t],
                       1e-10, 1e-12));
}

TEST_CASE("distill: each reading against a plain re-computation, the teacher is a fixed target") {
  at::manual_seed(9);
  const std::int64_t E = 3, T = 4, D = 2;
  wb::Routing r;
  r.expert_outputs = at::randn({E, T, D}, at::kDouble).requires_grad_(true);
  r.experts = at::tensor(std::vector<std::int64_t>{0, 2, 1, 0, 2, 1, 1, 0}).view({T, 2});
  r.kept = at::ones({T, 2}, at::kBool);
  r.kept[3][1] = false;  // dropped for capacity: not counted
  const at::Tensor y = r.expert_outputs.detach();

  auto dist = [&](std::int64_t e, std::int64_t t, bool squared) {
    double s = 0;
    for (std::int64_t d = 0; d < D; ++d) {
      double whole = 0;
      for (std::int64_t j = 0; j < E; ++j) whole += y[j][t][d].item<double>() / E;
      const double diff = whole - y[e][t][d].item<double>();
      s += diff * diff;
    }
    return squared ? s : std::sqrt(s);
  };
  for (const bool squared : {false, true}) {
    CAPTURE(squared);
    double routed = 0, all = 0;
    int pairs = 0;
    for (std::int64_t t = 0; t < T; ++t) {
      for (std::int64_t j = 0; j < 2; ++j)
        if (r.kept[t][j].item<bool>()) {
          routed += dist(r.experts[t][j].item<std::int64_t>(), t, squared);
          ++pairs;
        }
      for (std::int64_t e = 0; e < E; ++e) all += dist(e, t, squared);
    }
    const std::string distance = squared ? "squared" : "l2";
    CHECK(distill("routed", distance)->compute(one_view(r)).value.item<double>() ==
          doctest::Approx(routed / pairs).epsilon(1e-12));
    CHECK(distill("all", distance)->compute(one_view(r)).value.item<double>() ==
          doctest::Approx(all / (E * T)).epsilon(1e-12));
  }

  // Token 0 went to experts 0 and 2, never to 1: with a fixed teacher, expert 1's output on
  // token 0 gets no gradient; with teacher_gradient it does (through the mean).
  distill("routed", "squared")->compute(one_view(r)).value.backward();
  CHECK(r.expert_outputs.grad()[1][0].abs().sum().item<double>() == 0.0);
  CHECK(r.expert_outputs.grad()[0][0].abs().sum().item<double>() > 0.0);
  r.expert_outputs.mutable_grad().zero_();
  distill("routed", "squared", true)->compute(one_view(r)).value.backward();
  CHECK(r.expert_outputs.grad()[1][0].abs().sum().item<double>() > 0.0);

  CHECK(distill("routed", "l2")->requirements().expert_outputs);
  wb::Routing none = r;
  none.expert_outputs = at::Tensor();
  CHECK_THROWS_WITH_AS(distill("routed", "l2")->compute(one_view(none)),
                       doctest::Contains("no expert outputs"), std::logic_error);
}
