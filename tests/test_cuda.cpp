// CUDA: the MoE dispatch on the GPU against the masked reference, a bf16 training step, pinned
// batches copied without blocking, and c10d over NCCL with one rank. Each test case runs where a
// CUDA device is present and says that it was skipped elsewhere (scripts/gpu-check.sh runs them
// on a GPU machine).
#include <doctest/doctest.h>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/optim/adamw.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "config/run_config.h"
#include "dist/communicator.h"
#include "moe/dispatch.h"
#include "test_ogar_helpers.h"
#include "train/model.h"
#include "train/trainer.h"
#include "workbench/moe_layer.h"

using namespace crmoe_test;

namespace {

bool no_cuda() {
  if (at::hasCUDA()) return false;
  MESSAGE("skipped: no CUDA device here (or a LibTorch built without CUDA)");
  return true;
}

std::shared_ptr<wb::Gate> topk_gate(std::int64_t dim, std::int64_t experts, std::int64_t k,
                                    double capacity) {
  wb::Params p = plugins().defaults(wb::Kind::Gate, "noisy_topk");
  p.set("k", k);
  p.set("eval_capacity_factor", capacity);
  return plugins().make_gate("noisy_topk", p, wb::GateShape{dim, experts, 0});
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kCPU, at::kDouble) - b.to(at::kCPU, at::kDouble)).abs().max().item<double>();
}

// Output and gradients (x, w1, b1, w2, b2, combine weights) of f on copies of the inputs.
template <class F>
std::vector<at::Tensor> run(F f, const std::vector<at::Tensor>& inputs, const wb::Routing& r,
                            const at::Tensor& probe) {
  std::vector<at::Tensor> leaves;
  for (const auto& t : inputs) leaves.push_back(t.detach().clone().requires_grad_(true));
  wb::Routing rr = r;
  rr.weights = r.weights.detach().clone().requires_grad_(true);
  const at::Tensor y = f(leaves, rr);
  (y * probe).sum().backward();
  std::vector<at::Tensor> out{y.detach()};
  for (auto& l : leaves) out.push_back(l.grad());
  out.push_back(rr.weights.grad());
  return out;
}

wb::Routing to_device(const wb::Routing& r, c10::Device d) {
  wb::Routing o = r;
  o.experts = r.experts.to(d);
  o.weights = r.weights.to(d);
  o.kept = r.kept.to(d);
  o.probs = r.probs.to(d);
  return o;
}

}  // namespace

TEST_CASE("cuda: the GPU dispatch equals the masked reference (float64), per expert and grouped") {
  if (no_cuda()) return;
  const c10::Device gpu(c10::kCUDA, 0);
  const std::int64_t T = 64, D = 16, H = 24, E = 4;
  auto gate = topk_gate(D, E, 2, 0.6);
  gate->to(at::kDouble);
  const at::Tensor x = at::randn({T, D}, at::kDouble);
  wb::GateInput in;
  in.image = at::arange(T, at::kLong);
  in.tokens_per_image = 1;
  in.training = false;
  const wb::Routing r = gate->route(x, in);
  REQUIRE_FALSE(r.kept.all().item<bool>());
  const std::vector<at::Tensor> cpu{
      x, at::randn({E, D, H}, at::kDouble), at::randn({E, H}, at::kDouble),
      at::randn({E, H, D}, at::kDouble), at::randn({E, D}, at::kDouble)};
  const at::Tensor probe = at::randn({T, D}, at::kDouble);
  const auto ref = run(
      [](const std::vector<at::Tensor>& l, const wb::Routing& rr) {
        return wb::moe::dispatch_combine_masked(l[0], rr, l[1], l[2], l[3], l[4]);
      },
      cpu, r, probe);
  std::vector<at::Tensor> on_gpu;
  for (const auto& t : cpu) on_gpu.push_back(t.to(gpu));
  const auto gpu_out = run(
      [](const std::vector<at::Tensor>& l, const wb::Routing& rr) {
        return wb::dispatch_combine(l[0], rr, l[1], l[2], l[3], l[4]);  // selects the GPU path
      },
      on_gpu, to_device(r, gpu), probe.to(gpu));
  for (std::size_t i = 0; i < ref.size(); ++i) {
    CAPTURE(i);
    CHECK(gpu_out[i].is_cuda());
    CHECK(max_diff(gpu_out[i], ref[i]) < 1e-9);
  }

  if (!wb::moe::have_grouped_mm()) {
    MESSAGE("grouped products skipped: this LibTorch has no at::_grouped_mm");
    return;
  }
  // Grouped products in bf16 against the fp32 reference: bf16's relative rounding is 2^-9 per
  // input; the sums over D and H run in fp32.
  std::vector<at::Tensor> bf16;
  for (const auto& t : cpu) bf16.push_back(t.to(gpu, at::kBFloat16));
  wb::Routing rb = to_device(r, gpu);
  rb.weights = rb.weights.to(at::kFloat);
  try {
    const auto grouped = run(
        [](const std::vector<at::Tensor>& l, const wb::Routing& rr) {
          return wb::moe::dispatch_combine_device(l[0], rr, l[1], l[2], l[3], l[4],
                                                  wb::moe::DeviceProducts::grouped);
        },
        bf16, rb, probe.to(gpu, at::kBFloat16));
    const double scale = ref[0].abs().max().item<double>();
    CHECK(max_diff(grouped[0], ref[0]) < 0.05 * scale);
    for (std::size_t i = 1; i < ref.size(); ++i) {
      CAPTURE(i);
      const double s = ref[i].abs().max().item<double>();
      CHECK(max_diff(grouped[i], ref[i]) < 0.05 * s + 1e-6);
    }
  } catch (const c10::Error& e) {
    MESSAGE("grouped products refused on this GPU: ", e.what_without_backtrace());
  }
}

TEST_CASE("cuda: a bf16 CR-MoE step on the GPU equals the fp32 step within bf16's tolerance") {
  if (no_cuda()) return;
  const c10::Device gpu(c10::kCUDA, 0);
  auto step = [&](const std::string& precision) {
    const wb::RunConfig config = wb::parse_run_config(
        R"(
backbone = { plugin = "vit", dim = 64, depth = 2, heads = 4, patch = 4, experts = 4, moe_every = 2 }
gate = { plugin = "noisy_topk", k = 2, noise_std = 0.0 }
losses = [ { plugin = "moco", hidden = 64, out = 32 }, { plugin = "load_balance" },
           { plugin = "ogar", weight = 1.0 } ]
[train]
batch = 8
precision = ")" +
            precision + R"("
)",
        "cuda.toml", plugins());
    OneRank comm;
    at::manual_seed(2);
    wb::Model model = wb::build_model(config, plugins(), wb::DataShape{3, 16, 10}, &comm);
    model.to(gpu);
    model.train(true);
    const wb::TrainSchedule schedule = wb::train_schedule(config.settings.train, 10);
    torch::optim::AdamW optimizer(model.trainable_parameters(), torch::optim::AdamWOptions(1e-3));
    at::manual_seed(3);
    wb::Batch b;
    b.views = {at::randn({8, 3, 16, 16}), at::randn({8, 3, 16, 16})};
    for (int v = 0; v < 2; ++v)
      b.geometry.push_back(
          {at::tensor({0.0f, 0.0f, 1.0f, 1.0f}).repeat({8, 1}), at::zeros({8}, at::kBool)});
    b.labels = at::zeros({8}, at::kLong);
    b.index = at::arange(8, at::kLong);
    const wb::StepResult r =
        wb::train_step(model, optimizer, b.pinned().to(gpu), 0, schedule, comm);
    return r.loss.item<double>();
  };
  const double fp32 = step("fp32"), bf16 = step("bf16");
  CHECK(std::isfinite(bf16));
  CHECK(bf16 == doctest::Approx(fp32).epsilon(0.02));
}

TEST_CASE("cuda: pinned batches reach the GPU unchanged") {
  if (no_cuda()) return;
  wb::Batch b;
  b.views = {at::randn({4, 3, 8, 8})};
  b.labels = at::arange(4, at::kLong);
  const wb::Batch pinned = b.pinned();
  CHECK(pinned.views[0].is_pinned());
  const wb::Batch g = pinned.to(c10::Device(c10::kCUDA, 0));
  CHECK(g.views[0].is_cuda());
  CHECK(at::equal(g.views[0].cpu(), b.views[0]));
  CHECK(at::equal(g.labels.cpu(), b.labels));
}

TEST_CASE("cuda: c10d over NCCL with one rank gathers and averages") {
  if (no_cuda()) return;
  const auto store =
      std::filesystem::temp_directory_path() / ("wb_nccl_store_" + std::to_string(::getpid()));
  std::filesystem::remove(store);
  std::unique_ptr<wb::Communicator> comm;
  try {
    comm = wb::make_c10d_communicator(store.string(), 0, 1, c10::Device(c10::kCUDA, 0));
  } catch (const std::exception& e) {
    FAIL("NCCL communicator: ", e.what());
  }
  const at::Tensor t = at::arange(6, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA));
  CHECK(at::equal(comm->all_gather(t).cpu(), t.cpu()));
  std::vector<at::Tensor> v{t.clone()};
  comm->all_reduce_mean(v);
  CHECK(at::equal(v[0].cpu(), t.cpu()));
  comm->barrier();
  std::filesystem::remove(store);
}
