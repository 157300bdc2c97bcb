// Backbone "vit": the ViT of MoCo v3 with optional MoE blocks (docs/methods.md §1). One plugin
// covers three models of the papers:
//   ViT-S/16     backbone = { plugin = "vit", patch = 16, dim = 384, depth = 12, heads = 6 }
//   V-MoE-S/16   ... experts = 16, moe_every = 2 (expert_ratio 2: hidden 2 x dim)
//                gate = { plugin = "noisy_topk", k = 2 }
//   sep-ViT-S    ... experts = 2, expert_ratio = 4 (full-size experts), moe_every = 2
//                gate = { plugin = "fixed" }   # view i uses expert i
// Conv patch embedding, CLS token, fixed 2-D sin-cos positions, pre-norm blocks (LayerNorm eps
// 1e-6, qkv with bias, MLP ratio 4 with exact GELU), final norm. Initialised as MoCo v3's ViT.
// The pieces are the SDK's (workbench/layers.h); this file assembles them.
// With RoutingContext::keep set, only the visible patches (and CLS) enter the blocks (MAE).
// Gate noise follows RoutingContext::training; stochastic depth follows the module's train() /
// eval() state, as torch modules do.
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "workbench/backbone.h"
#include "workbench/layers.h"
#include "workbench/masking.h"
#include "workbench/moe_layer.h"
#include "workbench/plugin.h"

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::invalid_argument("backbone vit: " + what);
}

// MoE blocks from exactly one of moe_every / moe_last / moe_blocks (0-based block indices); a
// problem goes to `r` under the key that causes it.
std::vector<std::int64_t> moe_placement(const wb::Params& p, std::int64_t depth,
                                        std::int64_t experts, wb::ValidationReport& r) {
  const auto every = p.integer("moe_every"), last = p.integer("moe_last");
  std::vector<std::int64_t> blocks = p.integers("moe_blocks");
  const int given = (every > 0) + (last > 0) + !blocks.empty();
  const char* placement = every > 0 ? "moe_every" : last > 0 ? "moe_last" : "moe_blocks";
  if (given > 1) {
    r.error(placement, "give only one of moe_every, moe_last and moe_blocks");
    return {};
  }
  if (given == 1 && experts == 0) {
    r.error(placement, "a MoE placement (moe_every, moe_last or moe_blocks) needs experts > 0");
    return {};
  }
  if (given == 0 && experts > 0) {
    r.error("experts", "experts = " + std::to_string(experts) +
                           " needs a placement: moe_every, moe_last or moe_blocks");
    return {};
  }
  if (every > 0) {
    blocks.clear();
    for (std::int64_t i = every - 1; i < depth; i += every) blocks.push_back(i);
  } else if (last > 0) {
    std::vector<std::int64_t> odd;
    for (std::int64_t i = 1; i < depth; i += 2) odd.push_back(i);
    if (last > static_cast<std::int64_t>(odd.size())) {
      r.error("moe_last", "moe_last = " + std::to_string(last) + " but a depth of " +
                              std::to_string(depth) + " has only " + std::to_string(odd.size()) +
                              " odd-indexed blocks");
      return {};
    }
    blocks.assign(odd.end() - last, odd.end());
  } else {
    for (auto b : blocks)
      if (b < 0 || b >= depth) {
        r.error("moe_blocks", "moe_blocks entry " + std::to_string(b) +
                                  " is not a block index in [0, " + std::to_string(depth) + ")");
        return {};
      }
    std::sort(blocks.begin(), blocks.end());
    if (std::adjacent_find(blocks.begin(), blocks.end()) != blocks.end()) {
      r.error("moe_blocks", "moe_blocks lists a block twice");
      return {};
    }
  }
  if (experts > 0 && blocks.empty())
    r.error("moe_every", "moe_every = " + std::to_string(every) + " selects no block of " +
                             std::to_string(depth));
  return blocks;
}

// Everything the parameters and the image size decide, checked before any point runs
// (Registry::add_check) and again by the constructor: one owner for each rule. Declares the
// model's shape for the gate's and the losses' checks.
std::vector<std::int64_t> check(const wb::Params& p, const wb::ValidationContext& c,
                                wb::ValidationReport& r) {
  const auto patch = p.integer("patch"), dim = p.integer("dim"), heads = p.integer("heads");
  const auto experts = p.integer("experts");
  if (c.image_size > 0 && c.image_size % patch != 0)
    r.error("patch", "image size " + std::to_string(c.image_size) +
                         " is not a multiple of patch = " + std::to_string(patch));
  if (dim % heads != 0)
    r.error("heads", "dim = " + std::to_string(dim) +
                         " is not a multiple of heads = " + std::to_string(heads));
  if (dim % 4 != 0)
    r.error("dim",
            "dim = " + std::to_string(dim) + " must be a multiple of 4 (2-D sin-cos positions)");
  const std::vector<std::int64_t> blocks = moe_placement(p, p.integer("depth"), experts, r);
  if (experts > 0 && c.gate.empty())
    r.error("experts", "experts = " + std::to_string(experts) +
                           " needs a gate for its MoE layers, and the run has none (add e.g. "
                           "gate = { plugin = \"noisy_topk\" })");
  r.shape.feature_dim = dim;
  r.shape.experts = experts;
  r.shape.patch_grid = c.image_size > 0 ? c.image_size / patch : 0;
  r.shape.moe_layers = static_cast<std::int64_t>(blocks.size());
  return blocks;
}

class Vit : public wb::Backbone {
 public:
  Vit(const wb::Params& p, const wb::BackboneContext& context)
      : channels_(context.channels),
        patch_(p.integer("patch")),
        dim_(p.integer("dim")),
        experts_(p.integer("experts")) {
    const auto depth = p.integer("depth"), heads = p.integer("heads");
    if (context.image_size < 1) fail("the context has no image size");
    wb::ValidationContext shapes;
    shapes.image_size = context.image_size;
    shapes.channels = context.channels;
    shapes.gate = context.make_gate ? "(the context's gate maker)" : "";
    wb::ValidationReport report;
    moe_blocks_ = check(p, shapes, report);
    if (!report.ok()) fail(report.errors.front().message);
    grid_ = context.image_size / patch_;
    mlp_hidden_ =
        static_cast<std::int64_t>(std::llround(static_cast<double>(dim_) * p.real("mlp_ratio")));
    // A ratio, not a width: the same setting is right at every model width (Table 2's sep-ViT).
    expert_hidden_ =
        std::max<std::int64_t>(1, std::llround(static_cast<double>(dim_) * p.real("expert_ratio")));

    patch_embed_ =
        register_module("patch_embed", std::make_shared<wb::PatchEmbed>(channels_, dim_, patch_));
    cls_ = register_parameter("cls_token", at::randn({1, 1, dim_}) * 1e-6);
    positions_ = register_buffer("pos_embed", wb::sincos_positions(grid_, dim_));

    const double drop = p.real("drop_path");
    std::int64_t layer = 0;
    for (std::int64_t i = 0; i < depth; ++i) {
      std::shared_ptr<wb::MoeLayer> moe;
      if (std::binary_search(moe_blocks_.begin(), moe_blocks_.end(), i))
        moe = std::make_shared<wb::MoeLayer>(
            dim_, expert_hidden_, experts_,
            context.make_gate(wb::GateShape{dim_, experts_, layer++}));
      // Stochastic depth rises linearly over the blocks, as in MoCo v3 / timm.
      const double rate = depth > 1 ? drop * static_cast<double>(i) / double(depth - 1) : drop;
      blocks_.push_back(register_module(
          "block" + std::to_string(i),
          std::make_shared<wb::Block>(dim_, heads, mlp_hidden_, rate, std::move(moe))));
    }
    norm_ = register_module("norm", wb::layer_norm(dim_));
  }

  wb::BackboneOutput forward(const at::Tensor& images, const wb::RoutingContext& context) override {
    const auto size = grid_ * patch_;
    if (images.dim() != 4 || images.size(1) != channels_ || images.size(2) != size ||
        images.size(3) != size)
      fail("expects images [B, " + std::to_string(channels_) + ", " + std::to_string(size) + ", " +
           std::to_string(size) + "], got " + std::to_string(images.dim()) + " dims");
    const auto B = images.size(0);
    const auto N = grid_ * grid_;
    // Positions are added before the mask drops patches (MAE): each visible token keeps its own.
    at::Tensor x = patch_embed_->tokens(images) + positions_.narrow(1, 1, N);  // [B, N, D]
    if (context.keep.defined()) {
      const auto& keep = context.keep;
      if (keep.dim() != 2 || keep.size(0) != B || keep.size(1) < 1 || keep.size(1) > N)
        fail("the mask (RoutingContext::keep) must be [B, K] with 1 <= K <= " + std::to_string(N));
      x = wb::gather_tokens(x, keep);
    }
    const at::Tensor cls = (cls_ + positions_.narrow(1, 0, 1)).expand({B, 1, dim_});
    x = at::cat({cls, x}, 1);
    wb::BackboneOutput out;
    for (auto& block : blocks_) x = block->forward(x, context, out.routings);
    x = norm_->forward(x);
    out.cls = x.select(1, 0);
    out.patches = x.narrow(1, 1, x.size(1) - 1);
    out.keep = context.keep;
    return out;
  }

  std::int64_t feature_dim() const override { return dim_; }
  std::int64_t patch_grid() const override { return grid_; }
  std::vector<std::int64_t> moe_blocks() const override { return moe_blocks_; }
  std::int64_t experts() const override { return experts_; }

  // FLOPs as the papers count them: forward multiply-accumulates (MACs) of the matrix products,
  // attention included; norms, softmax, GELU and bias adds are left out. This reproduces
  // ViT-S/16 at 224 px = 4.6 G (twice that would be 9.2 G).
  wb::ModelCost cost() const override {
    wb::ModelCost c;
    for (const auto& p : parameters()) c.parameters += p.numel();
    const double N = double(grid_ * grid_), T = N + 1, D = double(dim_);
    double macs = N * double(channels_ * patch_ * patch_) * D;
    std::int64_t inactive = 0;
    for (const auto& block : blocks_) {
      macs += T * 4 * D * D + 2 * T * T * D;  // qkv + proj, q·k and attention·v
      if (const auto& moe = block->moe()) {
        const auto k = moe->gate().k(), h = moe->hidden();
        macs += T * D * double(experts_) + double(k) * 2 * T * D * double(h);
        inactive += (experts_ - k) * (2 * dim_ * h + h + dim_);
      } else {
        macs += 2 * T * D * double(mlp_hidden_);
      }
    }
    c.active_parameters = c.parameters - inactive;
    c.flops_per_image = macs;
    return c;
  }

  void freeze_patch_embedding() override {
    patch_embed_->weight.set_requires_grad(false);
    patch_embed_->bias.set_requires_grad(false);
  }

 private:
  std::int64_t channels_, patch_, dim_, experts_;
  std::int64_t grid_ = 0, mlp_hidden_ = 0, expert_hidden_ = 0;
  std::vector<std::int64_t> moe_blocks_;
  std::shared_ptr<wb::PatchEmbed> patch_embed_;
  at::Tensor cls_, positions_;
  std::vector<std::shared_ptr<wb::Block>> blocks_;
  torch::nn::LayerNorm norm_{nullptr};
};

}  // namespace

WORKBENCH_PLUGIN("backbone vit: ViT / V-MoE / sep-ViT") {
  using wb::ParamSpec;
  registry.add_backbone(
      "vit",
      "ViT with CLS token and fixed 2-D sin-cos positions (MoCo v3); optional MoE blocks "
      "(V-MoE, sep-ViT) whose gate comes from the run's gate table",
      {
          ParamSpec::integer("patch", 4, "patch size in pixels").at_least(1),
          ParamSpec::integer("dim", 192, "token width d").at_least(4),
          ParamSpec::integer("depth", 6, "number of blocks").at_least(1),
          ParamSpec::integer("heads", 3, "attention heads").at_least(1),
          ParamSpec::real("mlp_ratio", 4.0, "hidden width of the dense MLP / dim").above(0),
          ParamSpec::integer("experts", 0, "experts per MoE layer; 0 = dense ViT").at_least(0),
          ParamSpec::integer("moe_every", 0,
                             "every n-th block is MoE: 2 = blocks 1, 3, 5, ... (0-based)")
              .at_least(0),
          ParamSpec::integer("moe_last", 0, "the last n odd-indexed blocks are MoE").at_least(0),
          ParamSpec::integers("moe_blocks", {}, "explicit 0-based MoE block indices"),
          ParamSpec::real("expert_ratio", 2.0,
                          "hidden width of an expert / dim: 2 = CR-MoE's 2d (two active experts "
                          "cost one dense MLP); 4 = a full-size expert (sep-ViT)")
              .above(0),
          ParamSpec::real("drop_path", 0.0, "stochastic depth rate of the last block")
              .range(0, 0.99),
      },
      [](const wb::Params& p, const wb::BackboneContext& c) {
        return std::make_shared<Vit>(p, c);
      });
  registry.add_check(wb::Kind::Backbone, "vit",
                     [](const wb::Params& p, const wb::ValidationContext& c,
                        wb::ValidationReport& r) { check(p, c, r); });
}
