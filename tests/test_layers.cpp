// The SDK's shared building blocks (workbench/layers.h, workbench/balance.h) against independent
// computations, and the checkpoint contract: the module, parameter and buffer names of the vit
// backbone and the moco heads are those that earlier versions wrote into checkpoints/last.pt,
// so that their run directories still load.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <set>
#include <string>

#include "built_plugins.h"
#include "test_ogar_helpers.h"
#include "workbench/backbone.h"
#include "workbench/balance.h"
#include "workbench/layers.h"
#include "workbench/registry.h"

namespace {

using wb_test::plugins;

std::set<std::string> names(const torch::nn::Module& m) {
  std::set<std::string> out;
  for (const auto& item : m.named_parameters()) out.insert(item.key());
  for (const auto& item : m.named_buffers()) out.insert(item.key());
  return out;
}

// A dense block (MLP) and a MoE block: the names that earlier versions saved.
std::set<std::string> old_block_names(const std::string& block, bool moe) {
  std::set<std::string> out;
  for (const char* m : {"norm1", "attn.qkv", "attn.proj", "norm2"})
    for (const char* p : {"weight", "bias"}) out.insert(block + "." + m + "." + p);
  if (moe) {
    for (const char* p : {"w1", "b1", "w2", "b2", "gate.weight"}) out.insert(block + ".moe." + p);
  } else {
    for (const char* m : {"fc1", "fc2"})
      for (const char* p : {"weight", "bias"}) out.insert(block + "." + m + "." + p);
  }
  return out;
}

std::set<std::string> old_head_names(const std::string& head, int layers) {
  std::set<std::string> out;
  for (int i = 0; i < layers; ++i) {
    const std::string fc = head + ".fc" + std::to_string(i), bn = head + ".bn" + std::to_string(i);
    out.insert(fc + ".weight");  // bias-free Linear
    if (i + 1 < layers) {        // the last BN has no affine parameters
      out.insert(bn + ".weight");
      out.insert(bn + ".bias");
    }
    for (const char* b : {"running_mean", "running_var", "num_batches_tracked"})
      out.insert(bn + "." + b);
  }
  return out;
}

double at2(const at::Tensor& t, std::int64_t i, std::int64_t j) {
  return t[i][j].item<double>();
}

}  // namespace

TEST_CASE("checkpoint names: vit (dense and V-MoE) as earlier versions saved them") {
  wb::Params p = plugins().defaults(wb::Kind::Backbone, "vit");
  p.set("dim", std::int64_t{8});
  p.set("depth", std::int64_t{2});
  p.set("heads", std::int64_t{2});
  p.set("patch", std::int64_t{4});
  p.set("experts", std::int64_t{4});
  p.set("moe_every", std::int64_t{2});
  wb::BackboneContext context;
  context.channels = 1;
  context.image_size = 8;
  const wb::Params gate = plugins().defaults(wb::Kind::Gate, "noisy_topk");
  context.make_gate = [&gate](const wb::GateShape& s) {
    return plugins().make_gate("noisy_topk", gate, s);
  };
  auto vit = plugins().make_backbone("vit", p, context);

  std::set<std::string> expected = {"patch_embed.weight", "patch_embed.bias", "cls_token",
                                    "pos_embed",          "norm.weight",      "norm.bias"};
  for (const auto& n : old_block_names("block0", false)) expected.insert(n);
  for (const auto& n : old_block_names("block1", true)) expected.insert(n);
  CHECK(names(*vit) == expected);
  CHECK(vit->named_buffers().size() == 1);  // pos_embed is a buffer, not a parameter
  CHECK(vit->named_buffers().contains("pos_embed"));
}

TEST_CASE("checkpoint names: moco's projector, predictor and momentum projector") {
  wb::Params p = plugins().defaults(wb::Kind::Loss, "moco");
  p.set("hidden", std::int64_t{6});
  p.set("out", std::int64_t{4});
  auto moco = plugins().make_loss("moco", p, crmoe_test::loss_context(plugins(), 2, 5));
  std::set<std::string> expected;
  for (const auto& n : old_head_names("projector", 3)) expected.insert(n);
  for (const auto& n : old_head_names("predictor", 2)) expected.insert(n);
  for (const auto& n : old_head_names("momentum_projector", 3)) expected.insert(n);
  CHECK(names(*moco) == expected);
}

TEST_CASE("sincos_positions: MoCo v3 and MAE layouts against the formula, CLS row of zeros") {
  const std::int64_t g = 3, dim = 8, q = dim / 4;
  const at::Tensor moco = wb::sincos_positions(g, dim, wb::SinCosLayout::MocoV3).squeeze(0);
  const at::Tensor mae = wb::sincos_positions(g, dim, wb::SinCosLayout::Mae).squeeze(0);
  const at::Tensor bare = wb::sincos_positions(g, dim, wb::SinCosLayout::MocoV3, false);
  REQUIRE(moco.sizes() == at::IntArrayRef({1 + g * g, dim}));
  REQUIRE(bare.sizes() == at::IntArrayRef({1, g * g, dim}));
  for (std::int64_t c = 0; c < dim; ++c) {
    CHECK(at2(moco, 0, c) == 0.0);
    CHECK(at2(mae, 0, c) == 0.0);
  }
  for (std::int64_t r = 0; r < g; ++r)
    for (std::int64_t c = 0; c < g; ++c) {
      const std::int64_t t = 1 + r * g + c;
      for (std::int64_t i = 0; i < q; ++i) {
        const double w = std::pow(10000.0, -static_cast<double>(i) / static_cast<double>(q));
        // MoCo v3: row first; MAE: column first.
        CHECK(at2(moco, t, i) == doctest::Approx(std::sin(r * w)).epsilon(1e-6));
        CHECK(at2(moco, t, q + i) == doctest::Approx(std::cos(r * w)).epsilon(1e-6));
        CHECK(at2(moco, t, 2 * q + i) == doctest::Approx(std::sin(c * w)).epsilon(1e-6));
        CHECK(at2(moco, t, 3 * q + i) == doctest::Approx(std::cos(c * w)).epsilon(1e-6));
        CHECK(at2(mae, t, i) == doctest::Approx(std::sin(c * w)).epsilon(1e-6));
        CHECK(at2(mae, t, 3 * q + i) == doctest::Approx(std::cos(r * w)).epsilon(1e-6));
        CHECK(bare[0][t - 1][i].item<double>() == doctest::Approx(std::sin(r * w)).epsilon(1e-6));
      }
    }
  CHECK_THROWS_AS(wb::sincos_positions(2, 6), std::invalid_argument);
}

TEST_CASE("l2_normalize: unit vectors along the chosen dimension, zero vectors stay zero") {
  const at::Tensor x = at::tensor({3.0, 4.0, 0.0, 0.0, 1.0, 0.0}).view({2, 3});
  const at::Tensor rows = wb::l2_normalize(x);
  CHECK(at2(rows, 0, 0) == doctest::Approx(0.6));
  CHECK(at2(rows, 0, 1) == doctest::Approx(0.8));
  CHECK(at2(rows, 1, 1) == doctest::Approx(1.0));
  const at::Tensor cols = wb::l2_normalize(x, 0);
  CHECK(at2(cols, 0, 0) == doctest::Approx(1.0));
  CHECK(at2(cols, 0, 1) == doctest::Approx(4.0 / std::sqrt(17.0)));
  CHECK(at2(cols, 0, 2) == 0.0);  // a zero column: 0 / eps, not NaN
}

TEST_CASE("drop_path: identity in eval, whole samples dropped, the rest scaled by 1 / (1 - p)") {
  const at::Tensor x = at::ones({64, 3, 2});
  CHECK(at::equal(wb::drop_path(x, 0.5, false), x));
  CHECK(at::equal(wb::drop_path(x, 0.0, true), x));
  at::manual_seed(0);
  const at::Tensor y = wb::drop_path(x, 0.25, true);
  std::int64_t kept = 0;
  for (std::int64_t b = 0; b < 64; ++b) {
    const at::Tensor s = y[b];
    const double v = s.flatten()[0].item<double>();
    CHECK((v == 0.0 || v == doctest::Approx(1.0 / 0.75)));
    CHECK(at::equal(s, at::full_like(s, v)));  // one decision per sample
    kept += v != 0.0;
  }
  CHECK(kept > 32);
  CHECK(kept < 64);
}

TEST_CASE("PatchEmbed: tokens are the row-major patches through one linear map") {
  at::manual_seed(1);
  auto embed = std::make_shared<wb::PatchEmbed>(2, 5, 3);
  const at::Tensor images = at::randn({2, 2, 6, 6});
  const at::Tensor tokens = embed->tokens(images);
  REQUIRE(tokens.sizes() == at::IntArrayRef({2, 4, 5}));
  const at::Tensor w = embed->weight.reshape({5, -1});  // [dim, C * p * p]
  for (std::int64_t r = 0; r < 2; ++r)
    for (std::int64_t c = 0; c < 2; ++c) {
      const at::Tensor patch = images.narrow(2, 3 * r, 3).narrow(3, 3 * c, 3).reshape({2, -1});
      const at::Tensor expected = patch.mm(w.t()) + embed->bias;
      CHECK(at::allclose(tokens.select(1, r * 2 + c), expected, 1e-5, 1e-5));
    }
  CHECK(embed->bias.abs().sum().item<double>() == 0.0);  // zero bias at initialisation
}

TEST_CASE("Block: the dense MLP is gelu(x fc1) fc2, a MoE block reports its routing") {
  at::manual_seed(2);
  wb::Block block(8, 2, 16, 0.0);
  block.eval();
  const at::Tensor x = at::randn({2, 5, 8});
  std::vector<wb::Routing> routings;
  const at::Tensor y = block.forward(x, wb::RoutingContext{}, routings);
  CHECK(routings.empty());
  // By hand from the block's own parameters.
  auto param = [&](const std::string& n) { return *block.named_parameters().find(n); };
  auto norm = [&](const at::Tensor& t, const std::string& m) {
    return at::layer_norm(t, {8}, param(m + ".weight"), param(m + ".bias"), 1e-6);
  };
  const at::Tensor h1 = norm(x, "norm1");
  const at::Tensor qkv = at::linear(h1, param("attn.qkv.weight"), param("attn.qkv.bias"));
  const at::Tensor q = qkv.narrow(2, 0, 8).view({2, 5, 2, 4}).transpose(1, 2);
  const at::Tensor k = qkv.narrow(2, 8, 8).view({2, 5, 2, 4}).transpose(1, 2);
  const at::Tensor v = qkv.narrow(2, 16, 8).view({2, 5, 2, 4}).transpose(1, 2);
  const at::Tensor a = at::softmax(q.matmul(k.transpose(2, 3)) / 2.0, -1).matmul(v);
  const at::Tensor x1 = x + at::linear(a.transpose(1, 2).reshape({2, 5, 8}),
                                       param("attn.proj.weight"), param("attn.proj.bias"));
  const at::Tensor h2 = norm(x1, "norm2");
  const at::Tensor mlp =
      at::linear(at::gelu(at::linear(h2, param("fc1.weight"), param("fc1.bias"))),
                 param("fc2.weight"), param("fc2.bias"));
  CHECK(at::allclose(y, x1 + mlp, 1e-5, 1e-5));

  const wb::Params gp = plugins().defaults(wb::Kind::Gate, "noisy_topk");
  auto moe =
      std::make_shared<wb::MoeLayer>(8, 6, 4, plugins().make_gate("noisy_topk", gp, {8, 4, 0}));
  wb::Block moe_block(8, 2, 0, 0.0, moe);
  moe_block.forward(x, wb::RoutingContext{}, routings);
  REQUIRE(routings.size() == 1);
  CHECK(routings[0].experts.size(0) == 2 * 5);
}

TEST_CASE("MlpHead: Linear-BN-ReLU layers, the last BN without affine, its first layer") {
  at::manual_seed(3);
  wb::MlpHead head(4, 6, 3, 3);
  head.train();
  const at::Tensor x = at::randn({5, 4});
  const at::Tensor y = head.forward(x);
  REQUIRE(y.sizes() == at::IntArrayRef({5, 3}));
  // The last BN has no affine parameters: in training every output column has mean 0, var 1.
  CHECK(at::allclose(y.mean(0), at::zeros({3}), 1e-5, 1e-5));
  CHECK(at::allclose(y.var(0, false), at::ones({3}), 1e-3, 1e-3));
  CHECK(head.first_width() == 6);
  CHECK(head.first_layer_parameters().size() == 3);        // fc0.weight, bn0.weight, bn0.bias
  CHECK(head.first_layer(x).min().item<double>() >= 0.0);  // after the ReLU
}

TEST_CASE("balance: importance and load terms against hand-computed values") {
  // Importance: CV² of the column sums (population variance over the mean squared).
  const at::Tensor probs = at::tensor({0.7, 0.3, 0.1, 0.9}).view({2, 2});  // sums 0.8, 1.2
  CHECK(wb::importance_loss(probs).item<double>() == doctest::Approx(0.04 / 1.0));
  // Load with sigma = 1: P = 1 - Φ(threshold - clean); one item, two experts.
  const at::Tensor clean = at::tensor({0.0, 1.0}).view({1, 2});
  const at::Tensor threshold = at::tensor({1.0}).view({1, 1});
  auto upper = [](double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); };
  const double p0 = upper(1.0), p1 = upper(0.0), m = (p0 + p1) / 2;
  const double expected = ((p0 - m) * (p0 - m) + (p1 - m) * (p1 - m)) / 2 / (m * m);
  CHECK(wb::load_loss(clean, threshold, 1.0).item<double>() == doctest::Approx(expected));
  CHECK(at::equal(wb::add_noise(clean, 0.0), clean));
}
