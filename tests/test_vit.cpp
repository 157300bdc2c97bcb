// Backbone plugin vit: shapes, fixed sin-cos positions, MoE placement and its errors, cost()
// against the papers' ViT-S/16 and V-MoE-S/16 figures, sep-ViT, frozen patch embedding.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "built_plugins.h"
#include "workbench/backbone.h"
#include "workbench/moe_layer.h"
#include "workbench/registry.h"

namespace {

using wb_test::plugins;

// A tiny ViT: 1 x 8 x 8 images, 4 x 4 patches (grid 2), width 8, 4 blocks, 2 heads.
wb::Params tiny() {
  wb::Params p = plugins().defaults(wb::Kind::Backbone, "vit");
  p.set("dim", std::int64_t{8});
  p.set("depth", std::int64_t{4});
  p.set("heads", std::int64_t{2});
  p.set("patch", std::int64_t{4});
  return p;
}

std::shared_ptr<wb::Backbone> make_vit(const wb::Params& p, std::int64_t image_size = 8,
                                       std::int64_t channels = 1,
                                       const std::string& gate = "noisy_topk",
                                       wb::Params gate_params = {}) {
  if (gate_params.values().empty()) gate_params = plugins().defaults(wb::Kind::Gate, gate);
  wb::BackboneContext context;
  context.channels = channels;
  context.image_size = image_size;
  context.make_gate = [gate, gate_params](const wb::GateShape& s) {
    return plugins().make_gate(gate, gate_params, s);
  };
  return plugins().make_backbone("vit", p, context);
}

std::vector<std::int64_t> placement(std::int64_t depth, const std::string& key, wb::Value v) {
  wb::Params p = tiny();
  p.set("depth", depth);
  p.set("experts", std::int64_t{4});
  p.set(key, std::move(v));
  return make_vit(p)->moe_blocks();
}

using Blocks = std::vector<std::int64_t>;

}  // namespace

TEST_CASE("vit: output shapes, dense and with MoE blocks") {
  wb::Params p = tiny();
  auto dense = make_vit(p);
  CHECK(dense->feature_dim() == 8);
  CHECK(dense->patch_grid() == 2);
  CHECK(dense->experts() == 0);
  CHECK(dense->moe_blocks().empty());
  wb::RoutingContext context;
  auto out = dense->forward(at::randn({3, 1, 8, 8}), context);
  CHECK(out.cls.sizes() == at::IntArrayRef{3, 8});
  CHECK(out.patches.sizes() == at::IntArrayRef{3, 4, 8});
  CHECK(out.routings.empty());
  // Final LayerNorm (ones / zeros at init): every token has mean 0 over its features.
  CHECK(out.cls.mean(1).abs().max().item<double>() < 1e-5);

  p.set("experts", std::int64_t{4});
  p.set("moe_every", std::int64_t{2});
  auto moe = make_vit(p);
  out = moe->forward(at::randn({3, 1, 8, 8}), context);
  CHECK(out.cls.sizes() == at::IntArrayRef{3, 8});
  REQUIRE(out.routings.size() == 2);
  for (const auto& r : out.routings) {
    CHECK(r.experts.sizes() == at::IntArrayRef{15, 2});  // 3 images x (CLS + 4 patches), k = 2
    CHECK(r.tokens_per_image == 5);
    CHECK(r.tokens.sizes() == at::IntArrayRef{15, 8});
  }
  CHECK_THROWS_WITH_AS(moe->forward(at::randn({3, 1, 12, 12}), context),
                       doctest::Contains("expects images [B, 1, 8, 8]"), std::invalid_argument);

  // Gradients reach the patch embedding, the experts and the gates.
  out = moe->forward(at::randn({2, 1, 8, 8}), context);
  (out.cls.pow(2).sum() + out.routings[0].aux.at("importance")).backward();
  for (const auto& item : moe->named_parameters()) {
    const std::string& name = item.key();
    const at::Tensor& param = item.value();
    CAPTURE(name);
    if (name.find("cls_token") != std::string::npos) continue;  // tiny at init, may underflow
    REQUIRE(param.grad().defined());
    CHECK(param.grad().abs().sum().item<double>() > 0);
  }
}

TEST_CASE("vit: fixed 2-D sin-cos positions (MoCo v3 layout), CLS gets zeros") {
  wb::Params p = tiny();
  p.set("dim", std::int64_t{16});
  auto vit = make_vit(p, /*image_size=*/12);  // grid 3
  const at::Tensor pos = vit->named_buffers()["pos_embed"];
  REQUIRE(pos.sizes() == at::IntArrayRef{1, 10, 16});
  CHECK(vit->named_parameters().find("pos_embed") == nullptr);  // not learned
  CHECK(pos[0][0].abs().max().item<double>() == 0.0);
  const int q = 4;  // dim / 4 frequencies
  for (auto [r, c] : {std::pair{0, 1}, std::pair{2, 1}, std::pair{1, 2}, std::pair{2, 2}}) {
    const at::Tensor v = pos[0][1 + r * 3 + c];
    for (int i = 0; i < q; ++i) {
      const double w = std::pow(10000.0, -double(i) / q);
      CHECK(v[i].item<double>() == doctest::Approx(std::sin(r * w)).epsilon(1e-6));
      CHECK(v[q + i].item<double>() == doctest::Approx(std::cos(r * w)).epsilon(1e-6));
      CHECK(v[2 * q + i].item<double>() == doctest::Approx(std::sin(c * w)).epsilon(1e-6));
      CHECK(v[3 * q + i].item<double>() == doctest::Approx(std::cos(c * w)).epsilon(1e-6));
    }
  }
}

TEST_CASE("vit: MoE placement by every / last / explicit list, and its errors") {
  CHECK(placement(6, "moe_every", std::int64_t{2}) == Blocks{1, 3, 5});
  CHECK(placement(12, "moe_every", std::int64_t{2}) == Blocks{1, 3, 5, 7, 9, 11});
  CHECK(placement(6, "moe_every", std::int64_t{3}) == Blocks{2, 5});
  CHECK(placement(8, "moe_last", std::int64_t{2}) == Blocks{5, 7});  // V-MoE S/32 "last 2"
  CHECK(placement(7, "moe_last", std::int64_t{3}) == Blocks{1, 3, 5});
  CHECK(placement(6, "moe_blocks", std::vector<std::int64_t>{4, 0}) == Blocks{0, 4});

  auto error_of = [](wb::Params p) {
    try {
      make_vit(p);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  wb::Params p = tiny();
  p.set("experts", std::int64_t{4});
  CHECK(error_of(p).find("experts = 4 needs a placement") != std::string::npos);
  p.set("moe_every", std::int64_t{2});
  p.set("moe_last", std::int64_t{1});
  CHECK(error_of(p).find("only one of moe_every, moe_last and moe_blocks") != std::string::npos);
  p.set("moe_last", std::int64_t{0});
  p.set("experts", std::int64_t{0});
  CHECK(error_of(p).find("needs experts > 0") != std::string::npos);
  p = tiny();
  p.set("experts", std::int64_t{4});
  p.set("moe_last", std::int64_t{3});  // depth 4 has odd blocks 1, 3 only
  CHECK(error_of(p).find("only 2 odd-indexed blocks") != std::string::npos);
  p.set("moe_last", std::int64_t{0});
  p.set("moe_blocks", std::vector<std::int64_t>{1, 4});
  CHECK(error_of(p).find("moe_blocks entry 4 is not a block index") != std::string::npos);
  p = tiny();
  p.set("heads", std::int64_t{3});
  CHECK(error_of(p).find("not a multiple of heads") != std::string::npos);
  p = tiny();
  CHECK_THROWS_WITH_AS(make_vit(p, 10), doctest::Contains("not a multiple of patch = 4"),
                       std::invalid_argument);
}

TEST_CASE("vit: cost() reproduces ViT-S/16 (22 M, 4.6 G) and V-MoE-S/16 (72 M, 4.6 G)") {
  // The papers' "FLOPs" are multiply-accumulates: ViT-S/16 at 224 px is 4.6 G MACs.
  wb::Params p = plugins().defaults(wb::Kind::Backbone, "vit");
  p.set("patch", std::int64_t{16});
  p.set("dim", std::int64_t{384});
  p.set("depth", std::int64_t{12});
  p.set("heads", std::int64_t{6});
  const wb::ModelCost vit = make_vit(p, 224, 3)->cost();
  CHECK(vit.parameters == doctest::Approx(22e6).epsilon(0.03));
  CHECK(vit.active_parameters == vit.parameters);
  CHECK(vit.flops_per_image == doctest::Approx(4.6e9).epsilon(0.02));

  p.set("experts", std::int64_t{16});
  p.set("moe_every", std::int64_t{2});  // expert_ratio 2 by default: hidden 2 x 384 = 768
  const wb::ModelCost vmoe = make_vit(p, 224, 3)->cost();
  CHECK(vmoe.parameters == doctest::Approx(72e6).epsilon(0.03));
  CHECK(vmoe.flops_per_image == doctest::Approx(4.6e9).epsilon(0.02));
  // Exactly: the router (T x 384 x 16 per MoE layer) is all that k = 2 half-size experts add.
  CHECK(vmoe.flops_per_image - vit.flops_per_image == doctest::Approx(6.0 * 197 * 384 * 16));
  // Active: the dense count minus 6 MLPs plus 6 x (2 half-size experts + router).
  const double mlp = 2.0 * 384 * 1536 + 1536 + 384, expert = 2.0 * 384 * 768 + 768 + 384;
  CHECK(double(vmoe.active_parameters) ==
        doctest::Approx(double(vit.parameters) + 6 * (2 * expert + 384 * 16 - mlp)));
}

TEST_CASE("vit: sep-ViT = two full-size experts routed by view with the fixed gate") {
  wb::Params p = tiny();
  p.set("experts", std::int64_t{2});
  p.set("expert_ratio", 4.0);  // hidden 4 x dim = 32
  p.set("moe_every", std::int64_t{2});
  auto sep = make_vit(p, 8, 1, "fixed");
  auto dense = make_vit(tiny());
  const auto cost = sep->cost();
  CHECK(cost.active_parameters == dense->cost().parameters);  // one expert = the dense MLP
  CHECK(cost.flops_per_image == doctest::Approx(dense->cost().flops_per_image + 2 * 5 * 8 * 2));

  wb::RoutingContext context;
  context.view = at::tensor(std::vector<long>{0, 1, 1}, at::kLong);
  const auto out = sep->forward(at::randn({3, 1, 8, 8}), context);
  REQUIRE(out.routings.size() == 2);
  const at::Tensor expected = context.view.repeat_interleave(5);
  for (const auto& r : out.routings) CHECK(at::equal(r.experts.squeeze(1), expected));
}

TEST_CASE("vit: freeze_patch_embedding keeps the random patch projection fixed") {
  auto vit = make_vit(tiny());
  vit->freeze_patch_embedding();
  for (const auto& item : vit->named_parameters()) {
    const std::string& name = item.key();
    const at::Tensor& param = item.value();
    CAPTURE(name);
    CHECK(param.requires_grad() == (name.rfind("patch_embed.", 0) != 0));
  }
  // Initialisation as MoCo v3: xavier on the flattened conv weight, tiny CLS token.
  const at::Tensor w = vit->named_parameters()["patch_embed.weight"];
  CHECK(w.abs().max().item<double>() <= std::sqrt(6.0 / (16 + 8)));
  CHECK(vit->named_parameters()["cls_token"].abs().max().item<double>() < 1e-4);
}

TEST_CASE("vit: forward equals a plain re-implementation from its parameters (float64)") {
  wb::Params p = tiny();
  p.set("drop_path", 0.3);  // inactive in eval mode
  auto vit = make_vit(p);
  vit->to(at::kDouble);
  vit->eval();
  const auto P = vit->named_parameters();
  const at::Tensor images = at::randn({2, 1, 8, 8}, at::kDouble);
  const std::int64_t D = 8, heads = 2, hd = D / heads, B = 2;

  auto norm = [&](const at::Tensor& x, const std::string& name) {
    return at::layer_norm(x, {D}, P[name + ".weight"], P[name + ".bias"], 1e-6);
  };
  auto linear = [&](const at::Tensor& x, const std::string& name) {
    return at::matmul(x, P[name + ".weight"].t()) + P[name + ".bias"];
  };
  at::Tensor x = at::conv2d(images, P["patch_embed.weight"], P["patch_embed.bias"], {4, 4});
  x = x.flatten(2).transpose(1, 2);  // [B, 4, D], patches row-major
  x = at::cat({P["cls_token"].expand({B, 1, D}), x}, 1) + vit->named_buffers()["pos_embed"];
  for (int i = 0; i < 4; ++i) {
    const std::string b = "block" + std::to_string(i);
    const at::Tensor qkv = linear(norm(x, b + ".norm1"), b + ".attn.qkv");
    std::vector<at::Tensor> outs;
    for (std::int64_t h = 0; h < heads; ++h) {
      const at::Tensor q = qkv.narrow(2, h * hd, hd), k = qkv.narrow(2, D + h * hd, hd);
      const at::Tensor v = qkv.narrow(2, 2 * D + h * hd, hd);
      const at::Tensor att =
          at::softmax(at::matmul(q, k.transpose(1, 2)) / std::sqrt(double(hd)), 2);
      outs.push_back(at::matmul(att, v));
    }
    x = x + linear(at::cat(outs, 2), b + ".attn.proj");
    const at::Tensor h = norm(x, b + ".norm2");
    const at::Tensor hidden = linear(h, b + ".fc1");
    x = x + linear(0.5 * hidden * (1 + at::erf(hidden / std::sqrt(2.0))), b + ".fc2");
  }
  x = norm(x, "norm");

  wb::RoutingContext context;
  context.training = false;
  const auto out = vit->forward(images, context);
  CHECK((out.cls - x.select(1, 0)).abs().max().item<double>() < 1e-10);
  CHECK((out.patches - x.narrow(1, 1, 4)).abs().max().item<double>() < 1e-10);
}
