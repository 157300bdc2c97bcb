// init.from a dense run into a MoE backbone (MoCE, docs/methods.md §8): every expert of a MoE
// block starts as a copy of that block's dense MLP (plus noise of the set relative size), the
// gate keeps its fresh weights, everything else is the dense run's.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include "built_plugins.h"
#include "test_data_helpers.h"
#include "train/checkpoint.h"
#include "weights/init.h"
#include "weights/state_dict.h"
#include "weights/timm_names.h"
#include "weights/torch_file.h"
#include "workbench/backbone.h"
#include "workbench/registry.h"

namespace fs = std::filesystem;

namespace {

using wb_test::plugins;

std::shared_ptr<wb::Backbone> vit(std::int64_t experts, std::uint64_t seed) {
  at::manual_seed(seed);
  wb::Params p = plugins().defaults(wb::Kind::Backbone, "vit");
  p.set("dim", std::int64_t{8});
  p.set("depth", std::int64_t{2});
  p.set("heads", std::int64_t{2});
  p.set("patch", std::int64_t{4});
  if (experts > 0) {
    p.set("experts", experts);
    p.set("moe_blocks", std::vector<std::int64_t>{1});
    p.set("expert_ratio", 4.0);  // experts as wide as the dense MLP (mlp_ratio 4)
  }
  wb::BackboneContext context;
  context.channels = 1;
  context.image_size = 8;
  context.make_gate = [](const wb::GateShape& s) {
    return plugins().make_gate("noisy_topk", plugins().defaults(wb::Kind::Gate, "noisy_topk"), s);
  };
  return plugins().make_backbone("vit", p, context);
}

const at::Tensor& get(const wb::StateDict& d, const std::string& name) {
  const at::Tensor* t = wb::find_tensor(d, name);
  REQUIRE_MESSAGE(t, name);
  return *t;
}

}  // namespace

TEST_CASE("init: a dense run's MLP starts every expert of the MoE block, the gate stays fresh") {
  wbtest::TempDir dir;
  auto dense = vit(0, 1);
  wb::CheckpointState state;
  state.modules["backbone"] = dense;
  const fs::path run = dir.path() / "dense";
  wb::save_checkpoint(run / "checkpoints" / "last.pt", state);
  const wb::StateDict d = wb::module_state(*dense);

  auto moe = vit(4, 2);
  const at::Tensor gate_before = get(wb::module_state(*moe), "block1.moe.gate.weight").clone();
  // Without permission the fresh gate counts as missing.
  CHECK_THROWS_WITH_AS(wb::load_initial_weights(run, *moe, {}, {}, 0.0),
                       doctest::Contains("block1.moe.gate.weight"), std::runtime_error);
  const wb::InitOutcome o = wb::load_initial_weights(run, *moe, {"block1.moe.gate.*"}, {}, 0.0);
  CHECK(o.missing == std::vector<std::string>{"block1.moe.gate.weight"});
  CHECK(o.unexpected.empty());
  const wb::StateDict m = wb::module_state(*moe);
  for (std::int64_t e = 0; e < 4; ++e) {
    CHECK(at::equal(get(m, "block1.moe.w1")[e], get(d, "block1.fc1.weight").t()));
    CHECK(at::equal(get(m, "block1.moe.b1")[e], get(d, "block1.fc1.bias")));
    CHECK(at::equal(get(m, "block1.moe.w2")[e], get(d, "block1.fc2.weight").t()));
    CHECK(at::equal(get(m, "block1.moe.b2")[e], get(d, "block1.fc2.bias")));
  }
  CHECK(at::equal(get(m, "block0.fc1.weight"), get(d, "block0.fc1.weight")));
  CHECK(at::equal(get(m, "block1.attn.qkv.weight"), get(d, "block1.attn.qkv.weight")));
  CHECK(at::equal(get(m, "block1.moe.gate.weight"), gate_before));

  // With noise: the experts differ from each other, by about noise x the dense weight's std;
  // biases stay exact copies.
  auto noisy = vit(4, 3);
  wb::load_initial_weights(run, *noisy, {"block1.moe.gate.*"}, {}, 0.1);
  const wb::StateDict n = wb::module_state(*noisy);
  const at::Tensor w1 = get(n, "block1.moe.w1");
  const at::Tensor fc1 = get(d, "block1.fc1.weight").t();
  CHECK_FALSE(at::equal(w1[0], w1[1]));
  const double ratio = ((w1 - fc1.unsqueeze(0)).std() / fc1.std()).item<double>();
  CHECK(ratio > 0.08);
  CHECK(ratio < 0.12);
  CHECK(at::equal(get(n, "block1.moe.b1")[2], get(d, "block1.fc1.bias")));

  // timm's names (an export of the dense run) map the same way.
  const fs::path file = dir.path() / "dense.pt";
  wb::save_torch_file(file, wb::to_timm(d));
  auto from_timm = vit(4, 4);
  wb::load_initial_weights(file, *from_timm, {"blocks.1.mlp.gate.*"}, {}, 0.0);
  CHECK(at::equal(get(wb::module_state(*from_timm), "block1.moe.w2")[3],
                  get(d, "block1.fc2.weight").t()));
}
