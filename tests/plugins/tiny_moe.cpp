// Test plugin: a tiny backbone with one MoE layer, for end-to-end tests of training and
// evaluation while the real ViT lives elsewhere. Patches are embedded linearly, the CLS token
// is their mean plus a learned vector; a softmax router picks the top-k of E small experts per
// token (no capacity limit); CLS = the CLS token after the residual MoE layer.
#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>

#include "workbench/backbone.h"
#include "workbench/plugin.h"

namespace {

class TinyMoe final : public wb::Backbone {
 public:
  TinyMoe(const wb::Params& p, const wb::BackboneContext& c)
      : dim_(p.integer("dim")),
        experts_(p.integer("experts")),
        k_(p.integer("k")),
        patch_(p.integer("patch")),
        grid_(c.image_size / p.integer("patch")) {
    embed_ = register_module("embed", torch::nn::Linear(c.channels * patch_ * patch_, dim_));
    cls_ = register_parameter("cls", at::zeros({dim_}));
    router_ = register_module("router", torch::nn::Linear(dim_, experts_));
    experts_list_ = register_module("experts", torch::nn::ModuleList());
    for (std::int64_t e = 0; e < experts_; ++e)
      experts_list_->push_back(torch::nn::Linear(dim_, dim_));
  }

  wb::BackboneOutput forward(const at::Tensor& images, const wb::RoutingContext&) override {
    const auto B = images.size(0), C = images.size(1), p = patch_, g = grid_;
    // [B, C, g, p, g, p] -> [B, g*g, C*p*p]
    const at::Tensor patches = images.narrow(2, 0, g * p)
                                   .narrow(3, 0, g * p)
                                   .reshape({B, C, g, p, g, p})
                                   .permute({0, 2, 4, 1, 3, 5})
                                   .reshape({B, g * g, C * p * p});
    const at::Tensor tokens = embed_->forward(patches);
    const at::Tensor x = at::cat({(tokens.mean(1) + cls_).unsqueeze(1), tokens}, 1);
    const at::Tensor flat = x.reshape({B * (1 + g * g), dim_});
    wb::Routing r;
    r.probs = at::softmax(router_->forward(flat), 1);
    auto [weights, chosen] = r.probs.topk(k_, 1);
    r.experts = chosen;
    r.weights = weights;
    r.kept = at::ones_like(chosen, chosen.options().dtype(at::kBool));
    r.gates = at::zeros_like(r.probs).scatter(1, chosen, weights);
    r.tokens = flat;
    r.tokens_per_image = 1 + g * g;
    at::Tensor mixed = at::zeros_like(flat);
    for (std::int64_t e = 0; e < experts_; ++e)
      mixed =
          mixed +
          r.gates.select(1, e).unsqueeze(1) *
              experts_list_[static_cast<std::size_t>(e)]->as<torch::nn::Linear>()->forward(flat);
    const at::Tensor out = (flat + mixed).reshape({B, 1 + g * g, dim_});
    return {out.select(1, 0), out.narrow(1, 1, g * g), {r}, {}};
  }
  std::int64_t feature_dim() const override { return dim_; }
  std::int64_t patch_grid() const override { return grid_; }
  std::vector<std::int64_t> moe_blocks() const override { return {0}; }
  std::int64_t experts() const override { return experts_; }
  wb::ModelCost cost() const override { return {}; }
  void freeze_patch_embedding() override {}

 private:
  std::int64_t dim_, experts_, k_, patch_, grid_;
  torch::nn::Linear embed_{nullptr}, router_{nullptr};
  at::Tensor cls_;
  torch::nn::ModuleList experts_list_{nullptr};
};

}  // namespace

WORKBENCH_PLUGIN("test: a tiny one-layer MoE backbone") {
  registry.add_backbone("tiny_moe", "patch embedding + one top-k MoE layer (tests only)",
                        {wb::ParamSpec::integer("dim", 8, "token width").at_least(1),
                         wb::ParamSpec::integer("experts", 4, "experts").at_least(1),
                         wb::ParamSpec::integer("k", 2, "experts per token").at_least(1),
                         wb::ParamSpec::integer("patch", 7, "patch side in pixels").at_least(1)},
                        [](const wb::Params& p, const wb::BackboneContext& c) {
                          return std::make_shared<TinyMoe>(p, c);
                        });
}
