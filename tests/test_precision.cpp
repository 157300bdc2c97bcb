// train.precision = "bf16" on the CPU (LibTorch's CPU autocast): a CR-MoE step's loss and
// gradients against the same step in fp32 from the same weights, within the tolerance that
// docs/methods.md §1 gives; the weights and the optimizer stay fp32; autocast is off again
// after the step.
#include <doctest/doctest.h>

#include <ATen/ATen.h>
#include <torch/optim/adamw.h>

#include <cmath>

#include "compat/torch_compat.h"
#include "config/run_config.h"
#include "test_ogar_helpers.h"
#include "train/model.h"
#include "train/trainer.h"
#include "workbench/layers.h"

using namespace crmoe_test;

namespace {

wb::Batch two_views(std::int64_t size) {
  at::manual_seed(11);
  wb::Batch b;
  const View v1{{{0, 0, 1, 1}, {0.1, 0.1, 0.8, 0.8}, {0, 0, 0.6, 0.6}, {0.2, 0, 0.8, 1}},
                {false, true, false, false}};
  const View v2{{{0, 0, 1, 1}, {0, 0, 0.9, 0.9}, {0.3, 0.3, 0.7, 0.7}, {0, 0.1, 0.7, 0.9}},
                {true, false, false, true}};
  b.views = {at::randn({size, 1, 16, 16}), at::randn({size, 1, 16, 16})};
  for (const auto& g : {geometry(v1), geometry(v2)})  // the 4 boxes repeated to `size` images
    b.geometry.push_back({g.box.repeat({size / 4, 1}), g.flip.repeat({size / 4})});
  b.labels = at::zeros({size}, at::kLong);
  b.index = at::arange(size, at::kLong);
  return b;
}

struct Stepped {
  double loss = 0;
  at::Tensor grads;  // every trainable parameter's gradient, flattened, in order
  bool fp32_weights = true;
};

Stepped one_step(const std::string& precision, int experts) {
  const wb::RunConfig config = wb::parse_run_config(
      R"(
backbone = { plugin = "vit", dim = 32, depth = 2, heads = 2, patch = 4, experts = )" +
          std::to_string(experts) + (experts > 0 ? ", moe_every = 2" : "") + R"( }
gate = { plugin = "noisy_topk", k = 2, noise_std = 0.0 }
losses = [ { plugin = "moco", hidden = 64, out = 32 }, { plugin = "load_balance" },
           { plugin = "ogar", weight = 1.0 } ]
[train]
batch = 32
precision = ")" +
          precision + R"("
)",
      "precision.toml", plugins());
  OneRank comm;
  at::manual_seed(2);  // the same initial weights for both precisions
  wb::Model model = wb::build_model(config, plugins(), wb::DataShape{1, 16, 10}, &comm);
  model.train(true);
  {
    // MoCo v3 starts the CLS token at N(0, 1e-6^2): every image's feature is then nearly the
    // same, and the contrastive gradient is a difference of nearly equal numbers, which no
    // 8-bit mantissa keeps. A unit-scale token (the same in both runs) gives the step the
    // image-dependent features that training reaches after a few steps.
    at::NoGradGuard no_grad;
    at::manual_seed(4);
    const at::Tensor cls = at::randn_like(model.backbone->named_parameters()["cls_token"]);
    model.backbone->named_parameters()["cls_token"].copy_(cls);
    model.momentum->named_parameters()["cls_token"].copy_(cls);
  }
  wb::TrainSchedule schedule = wb::train_schedule(config.settings.train, 10);
  CHECK(schedule.bf16 == (precision == "bf16"));
  torch::optim::AdamW optimizer(model.trainable_parameters(), torch::optim::AdamWOptions(1e-3));
  const wb::StepResult r = wb::train_step(model, optimizer, two_views(32), 0, schedule, comm);
  Stepped out;
  out.loss = r.loss.item<double>();
  std::vector<at::Tensor> grads;
  for (const auto& p : model.trainable_parameters()) {
    out.fp32_weights = out.fp32_weights && p.scalar_type() == at::kFloat;
    if (p.grad().defined()) {
      out.fp32_weights = out.fp32_weights && p.grad().scalar_type() == at::kFloat;
      grads.push_back(p.grad().reshape({-1}).to(at::kDouble));
    }
  }
  out.grads = at::cat(grads);
  for (const auto& entry : optimizer.state())
    out.fp32_weights =
        out.fp32_weights &&
        static_cast<torch::optim::AdamWParamState&>(*entry.second).exp_avg().scalar_type() ==
            at::kFloat;
  return out;
}

double cosine(const at::Tensor& a, const at::Tensor& b) {
  return (a * b).sum().item<double>() / (a.norm().item<double>() * b.norm().item<double>());
}

}  // namespace

TEST_CASE("precision = bf16: autocast runs the products in bf16 and restores the state") {
  CHECK_FALSE(wb::compat::autocast_enabled(c10::DeviceType::CPU));
  {
    wb::compat::AutocastGuard guard(c10::DeviceType::CPU, true, at::kBFloat16);
    CHECK(wb::compat::autocast_enabled(c10::DeviceType::CPU));
    const bool mm_bf16 = at::mm(at::ones({2, 2}), at::ones({2, 2})).scalar_type() == at::kBFloat16;
    CHECK(mm_bf16);
    // The SDK's helper keeps softmax inputs in fp32.
    const bool up = wb::at_least_fp32(at::ones({2}, at::kBFloat16)).scalar_type() == at::kFloat;
    const bool kept = wb::at_least_fp32(at::ones({2}, at::kDouble)).scalar_type() == at::kDouble;
    CHECK(up);
    CHECK(kept);
  }
  CHECK_FALSE(wb::compat::autocast_enabled(c10::DeviceType::CPU));
  const bool mm_fp32 = at::mm(at::ones({2, 2}), at::ones({2, 2})).scalar_type() == at::kFloat;
  CHECK(mm_fp32);
}

TEST_CASE("precision = bf16: a CR-MoE step equals the fp32 step within bf16's tolerance") {
  for (int experts : {0, 4}) {
    CAPTURE(experts);
    const Stepped fp32 = one_step("fp32", experts);
    const Stepped bf16 = one_step("bf16", experts);
    CHECK(fp32.fp32_weights);
    CHECK(bf16.fp32_weights);  // master weights, gradients and AdamW moments stay fp32
    CHECK(std::isfinite(bf16.loss));
    // bf16 keeps 8 significant bits (relative rounding 2^-9): the products' inputs are rounded,
    // their sums and the softmaxes are fp32. Tolerance (docs/methods.md §1): loss within 1 %,
    // gradient norm within 5 %, gradient direction within cosine 0.95 (an InfoNCE gradient at
    // initialisation is a difference of nearly equal terms, so its relative error exceeds the
    // inputs'; measured: 0.98-0.99, loss within 0.02 %).
    CHECK(bf16.loss == doctest::Approx(fp32.loss).epsilon(0.01));
    CHECK(bf16.loss != fp32.loss);  // the step did run in bf16
    CHECK(cosine(bf16.grads, fp32.grads) > 0.95);
    CHECK(bf16.grads.norm().item<double>() ==
          doctest::Approx(fp32.grads.norm().item<double>()).epsilon(0.05));
  }
}
