// OGAR, MoCo and load_balance in a real (tiny) V-MoE built through the registry and trained for
// a step by the trainer's train_step: gradients reach the online gate weights, the momentum
// encoder gets none and does not move with the optimiser; w_G = 0 still steps.
#include <doctest/doctest.h>

#include <ATen/ATen.h>
#include <torch/optim/adamw.h>

#include <cmath>
#include <map>

#include "config/run_config.h"
#include "test_ogar_helpers.h"
#include "train/model.h"
#include "train/trainer.h"

using namespace crmoe_test;

namespace {

// 8 x 8 grey images in 4 x 4 patches (grid 2), width 8, blocks 1 and 3 MoE with 4 experts.
wb::RunConfig tiny_config(const std::string& losses) {
  return wb::parse_run_config(R"(
backbone = { plugin = "vit", dim = 8, depth = 4, heads = 2, patch = 4, experts = 4, moe_every = 2 }
gate = { plugin = "noisy_topk", k = 2 }
losses = )" + losses + R"(
[train]
batch = 4
)",
                              "tiny.toml", plugins());
}

wb::Batch two_views() {
  at::manual_seed(5);
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

struct Trained {
  wb::Model model;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  wb::TrainSchedule settings;
};

Trained build(const std::string& losses, OneRank& comm) {
  const wb::RunConfig config = tiny_config(losses);
  Trained t;
  t.model = wb::build_model(config, plugins(), wb::DataShape{1, 8, 10}, &comm);
  t.model.train(true);
  t.settings = wb::train_schedule(config.settings.train, 10);
  t.settings.warmup_steps = 0;  // the first step already has the full learning rate
  t.optimizer = std::make_unique<torch::optim::AdamW>(
      t.model.trainable_parameters(), torch::optim::AdamWOptions(1e-2).weight_decay(0));
  return t;
}

std::map<std::string, at::Tensor> snapshot(const torch::nn::Module& m) {
  std::map<std::string, at::Tensor> out;
  for (const auto& item : m.named_parameters()) out[item.key()] = item.value().detach().clone();
  return out;
}

bool is_gate(const std::string& name) {
  return name.find(".gate.") != std::string::npos;
}

}  // namespace

TEST_CASE("ogar in a real V-MoE: gradients reach the online gates, not the momentum encoder") {
  OneRank comm;
  Trained t = build(R"([{ plugin = "ogar", weight = 1.0 }])", comm);
  REQUIRE(t.model.momentum);
  const auto online_before = snapshot(*t.model.backbone);
  const auto momentum_before = snapshot(*t.model.momentum);
  const wb::Batch batch = two_views();
  const wb::StepResult r = wb::train_step(t.model, *t.optimizer, batch, 0, t.settings, comm);
  CHECK(std::isfinite(r.loss.item<double>()));
  CHECK(r.logged.count("loss/ogar/valid_fraction") == 1);
  CHECK(r.logged.at("loss/ogar/valid_fraction") > 0);

  int gates = 0;
  for (const auto& item : t.model.backbone->named_parameters()) {
    if (!is_gate(item.key())) continue;
    CAPTURE(item.key());
    REQUIRE(item.value().grad().defined());
    CHECK(item.value().grad().abs().sum().item<double>() > 0);
    CHECK_FALSE(at::equal(item.value(), online_before.at(item.key())));  // the step moved it
    ++gates;
  }
  CHECK(gates == 2);
  // The momentum encoder: no gradients, and the optimiser did not touch it (the EMA before the
  // forward left it equal to the untrained online weights it was copied from).
  for (const auto& item : t.model.momentum->named_parameters()) {
    CAPTURE(item.key());
    CHECK_FALSE(item.value().requires_grad());
    CHECK_FALSE(item.value().grad().defined());
    CHECK(at::allclose(item.value(), momentum_before.at(item.key())));
  }
}

TEST_CASE("moco + load_balance + ogar train a real V-MoE, w_G = 0 still steps") {
  OneRank comm;
  for (double w : {0.001, 0.0}) {
    CAPTURE(w);
    Trained t = build(R"([{ plugin = "moco", hidden = 16, out = 8 }, { plugin = "load_balance" },
                          { plugin = "ogar", weight = )" +
                          std::to_string(w) + " }]",
                      comm);
    const auto before = snapshot(*t.model.backbone);
    const wb::Batch batch = two_views();
    for (std::int64_t step = 0; step < 2; ++step) {
      const wb::StepResult r = wb::train_step(t.model, *t.optimizer, batch, step, t.settings, comm);
      CHECK(std::isfinite(r.loss.item<double>()));
      CHECK(r.logged.count("loss/moco/ctr") == 1);
      CHECK(r.logged.count("loss/load_balance/importance") == 1);
      CHECK(r.logged.count("loss/ogar/cls") == 1);
      if (w == 0) CHECK(r.logged.at("loss/ogar/total") == 0.0);
    }
    int moved = 0;
    for (const auto& item : t.model.backbone->named_parameters())
      moved += !at::equal(item.value(), before.at(item.key()));
    CHECK(moved > 0);
    // The momentum encoder followed the online one by EMA after the first step.
    bool followed = false;
    for (const auto& item : t.model.momentum->named_parameters())
      followed = followed || !at::equal(item.value(), before.at(item.key()));
    CHECK(followed);
  }
}
