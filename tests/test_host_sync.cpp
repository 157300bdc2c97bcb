// No host sync in a training step (docs/design.md, "No host sync in the step"): a CR-MoE step
// (V-MoE with noisy top-k, capacity and BPR, MoCo, load balance, OGAR, clipping) and a MoE layer
// with the cluster gate read nothing back from their tensors; the metrics stay tensors until the
// log point; the routing statistics are computed on the device.
// Reads are counted with a LibTorch observer on the op every read goes through
// (aten::_local_scalar_dense: .item(), scalar comparisons, bool conversions).
#include <doctest/doctest.h>

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <torch/optim/adamw.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "config/run_config.h"
#include "test_ogar_helpers.h"
#include "train/model.h"
#include "train/routing_stats.h"
#include "train/trainer.h"
#include "workbench/moe_layer.h"

using namespace crmoe_test;

namespace {

std::atomic<int> g_reads{0};

// Counts the host reads made on this thread while it lives.
class ReadCounter {
 public:
  ReadCounter() {
    g_reads = 0;
    handle_ = at::addThreadLocalCallback(at::RecordFunctionCallback(
        [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
          if (std::strcmp(fn.name(), "aten::_local_scalar_dense") == 0) ++g_reads;
          return nullptr;
        }));
  }
  ~ReadCounter() { at::removeCallback(handle_); }
  int reads() const { return g_reads.load(); }

 private:
  at::CallbackHandle handle_;
};

wb::Batch two_views() {
  at::manual_seed(3);
  wb::Batch b;
  const View v1{{{0, 0, 1, 1}, {0.1, 0.1, 0.8, 0.8}, {0, 0, 0.6, 0.6}, {0.2, 0, 0.8, 1}},
                {false, true, false, false}};
  const View v2{{{0, 0, 1, 1}, {0, 0, 0.9, 0.9}, {0.3, 0.3, 0.7, 0.7}, {0, 0.1, 0.7, 0.9}},
                {true, false, false, true}};
  b.views = {at::randn({4, 1, 8, 8}), at::randn({4, 1, 8, 8})};
  b.geometry = {geometry(v1), geometry(v2)};
  b.labels = at::zeros({4}, at::kLong);
  b.index = at::arange(4, at::kLong);
  return b;
}

}  // namespace

TEST_CASE("host reads: the counter sees .item() and comparisons of tensors") {
  const at::Tensor t = at::ones({3});
  ReadCounter counter;
  CHECK(counter.reads() == 0);
  (void)t.sum().item<double>();
  CHECK(counter.reads() == 1);
  if (t.sum().gt(1).item<bool>()) (void)t.max().item<float>();
  CHECK(counter.reads() == 3);
}

TEST_CASE("host reads: a CR-MoE training step reads nothing back from the device") {
  const wb::RunConfig config = wb::parse_run_config(R"(
backbone = { plugin = "vit", dim = 8, depth = 4, heads = 2, patch = 4, experts = 4, moe_every = 2 }
gate = { plugin = "noisy_topk", k = 2, capacity_factor = 1.0, bpr = true }
losses = [ { plugin = "moco", hidden = 16, out = 8 }, { plugin = "load_balance" },
           { plugin = "ogar", weight = 1.0 } ]
[train]
batch = 4
clip_grad = 1.0
)",
                                                    "tiny.toml", plugins());
  OneRank comm;
  wb::Model model = wb::build_model(config, plugins(), wb::DataShape{1, 8, 10}, &comm);
  model.train(true);
  const wb::TrainSchedule schedule = wb::train_schedule(config.settings.train, 10);
  REQUIRE(schedule.clip_grad > 0);  // the clipping path is part of the step
  torch::optim::AdamW optimizer(model.trainable_parameters(), torch::optim::AdamWOptions(1e-3));
  const wb::Batch batch = two_views();

  ReadCounter counter;
  wb::StepResult r;
  for (std::int64_t step = 0; step < 3; ++step)
    r = wb::train_step(model, optimizer, batch, step, schedule, comm);
  CHECK(counter.reads() == 0);
  // The metrics are tensors (read later, at the log point), not numbers read in the step.
  REQUIRE(r.logged.count("loss/moco/ctr") == 1);
  CHECK(r.logged.at("loss/moco/ctr").is_tensor());
  CHECK(r.logged.at("loss/ogar/valid_fraction").is_tensor());
  CHECK(r.logged.at("loss/load_balance/importance").is_tensor());
  CHECK(r.logged.at("train/loss").is_tensor());
  REQUIRE(r.loss.defined());
  CHECK(std::isfinite(r.loss.item<double>()));
  CHECK(r.terms.numel() == 3);
  // The total is the sum of the terms.
  CHECK(r.loss.item<double>() == doctest::Approx(r.terms.sum().item<double>()).epsilon(1e-5));
}

TEST_CASE("routing statistics on the device match hand-computed values") {
  wb::Routing r;
  // 4 tokens, k = 2, 3 experts; token 3's second choice was dropped.
  r.experts = at::tensor(std::vector<std::int64_t>{0, 1, 0, 2, 1, 0, 0, 1}).view({4, 2});
  r.kept = at::tensor(std::vector<std::int64_t>{1, 1, 1, 1, 1, 1, 1, 0}).to(at::kBool).view({4, 2});
  r.weights = at::ones({4, 2});
  r.probs =
      at::tensor(std::vector<float>{0.5, 0.5, 0.0, 0.25, 0.25, 0.5, 1.0, 0.0, 0.0, 0.2, 0.3, 0.5})
          .view({4, 3});
  r.aux["importance"] = at::tensor(0.75);
  ReadCounter counter;
  const at::Tensor row = wb::routing_stats_tensor(r);
  CHECK(counter.reads() == 0);
  const wb::RoutingStats s = wb::routing_stats_from(row, 3);
  // Kept: expert 0 four times, 1 twice, 2 once (of 7).
  REQUIRE(s.expert_load.size() == 3);
  CHECK(s.expert_load[0] == doctest::Approx(4.0 / 7));
  CHECK(s.expert_load[1] == doctest::Approx(2.0 / 7));
  CHECK(s.expert_load[2] == doctest::Approx(1.0 / 7));
  const double h =
      -(4.0 / 7 * std::log(4.0 / 7) + 2.0 / 7 * std::log(2.0 / 7) + 1.0 / 7 * std::log(1.0 / 7));
  CHECK(s.load_entropy == doctest::Approx(h));
  const double t0 = std::log(2.0), t1 = -(0.5 * std::log(0.25) + 0.5 * std::log(0.5)), t2 = 0;
  const double t3 = -(0.2 * std::log(0.2) + 0.3 * std::log(0.3) + 0.5 * std::log(0.5));
  CHECK(s.token_entropy == doctest::Approx((t0 + t1 + t2 + t3) / 4).epsilon(1e-5));
  CHECK(s.importance_cv2 == doctest::Approx(0.75));
  CHECK(s.load_cv2 == 0.0);  // no "load" aux loss
  CHECK(s.dropped == doctest::Approx(1.0 / 8));
}

TEST_CASE(
    "host reads: a MoE layer with the cluster gate reads nothing back, forward and backward") {
  const std::int64_t B = 4, N = 3, D = 6, E = 4;
  wb::Params p = plugins().defaults(wb::Kind::Gate, "cluster");
  p.set("k", 2);
  wb::GateShape shape{D, E, 0};
  shape.centroids = at::randn({3, 5});
  wb::MoeLayer layer(D, 8, E, plugins().make_gate("cluster", p, shape));
  const at::Tensor x = at::randn({B, N, D}).requires_grad_(true);
  wb::RoutingContext context;
  context.training = false;  // no noise: images of one cluster are routed alike
  context.cluster = at::tensor(std::vector<std::int64_t>{2, 0, 2, 1}, at::kLong);

  ReadCounter counter;
  auto [y, routing] = layer.forward(x, context);
  (y * y).sum().backward();
  CHECK(counter.reads() == 0);
  // The step did route by cluster: images 0 and 2 share a cluster, so their tokens share experts.
  CHECK(at::equal(routing.experts.narrow(0, 0, N), routing.experts.narrow(0, 2 * N, N)));
  CHECK(layer.w1_.grad().defined());
}
