// Backbone "vit": the ViT of MoCo v3 with optional MoE blocks (methods.md §1). One plugin covers
// three models of the papers:
//   ViT-S/16     backbone = { plugin = "vit", patch = 16, dim = 384, depth = 12, heads = 6 }
//   V-MoE-S/16   ... experts = 16, moe_every = 2 (expert_ratio 2: hidden 2 x dim)
//                gate = { plugin = "noisy_topk", k = 2 }
//   sep-ViT-S    ... experts = 2, expert_ratio = 4 (full-size experts), moe_every = 2
//                gate = { plugin = "fixed" }   # view i uses expert i
// Conv patch embedding, CLS token, fixed 2-D sin-cos positions, pre-norm blocks (LayerNorm eps
// 1e-6, qkv with bias, MLP ratio 4 with exact GELU), final norm. Initialised as MoCo v3's ViT.
// Gate noise follows RoutingContext::training; stochastic depth follows the module's train() /
// eval() state, as torch modules do.
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "workbench/backbone.h"
#include "workbench/moe_layer.h"
#include "workbench/plugin.h"

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::invalid_argument("backbone vit: " + what);
}

// MoE blocks from exactly one of moe_every / moe_last / moe_blocks (0-based block indices).
std::vector<std::int64_t> moe_placement(const wb::Params& p, std::int64_t depth,
                                        std::int64_t experts) {
  const auto every = p.integer("moe_every"), last = p.integer("moe_last");
  std::vector<std::int64_t> blocks = p.integers("moe_blocks");
  const int given = (every > 0) + (last > 0) + !blocks.empty();
  if (given > 1) fail("give only one of moe_every, moe_last and moe_blocks");
  if (given == 1 && experts == 0)
    fail("a MoE placement (moe_every, moe_last or moe_blocks) needs experts > 0");
  if (given == 0 && experts > 0)
    fail("experts = " + std::to_string(experts) +
         " needs a placement: moe_every, moe_last or moe_blocks");
  if (every > 0) {
    blocks.clear();
    for (std::int64_t i = every - 1; i < depth; i += every) blocks.push_back(i);
  } else if (last > 0) {
    std::vector<std::int64_t> odd;
    for (std::int64_t i = 1; i < depth; i += 2) odd.push_back(i);
    if (last > static_cast<std::int64_t>(odd.size()))
      fail("moe_last = " + std::to_string(last) + " but a depth of " + std::to_string(depth) +
           " has only " + std::to_string(odd.size()) + " odd-indexed blocks");
    blocks.assign(odd.end() - last, odd.end());
  } else {
    for (auto b : blocks)
      if (b < 0 || b >= depth)
        fail("moe_blocks entry " + std::to_string(b) + " is not a block index in [0, " +
             std::to_string(depth) + ")");
    std::sort(blocks.begin(), blocks.end());
    if (std::adjacent_find(blocks.begin(), blocks.end()) != blocks.end())
      fail("moe_blocks lists a block twice");
  }
  if (experts > 0 && blocks.empty())
    fail("moe_every = " + std::to_string(every) + " selects no block of " + std::to_string(depth));
  return blocks;
}

// Fixed 2-D sin-cos positions in MoCo v3's layout: patch (r, c) of the g x g grid gets
// [sin(r w), cos(r w), sin(c w), cos(c w)] with w_i = 10000^(-i / (dim / 4)), i < dim / 4;
// the CLS token gets zeros. MAE's formula is the same with the row and column halves swapped.
at::Tensor sincos_positions(std::int64_t grid, std::int64_t dim) {
  const auto q = dim / 4;
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor omega = at::pow(10000.0, -at::arange(q, f64) / static_cast<double>(q));
  const at::Tensor coord = at::arange(grid, f64);
  const at::Tensor row = coord.repeat_interleave(grid).unsqueeze(1) * omega.unsqueeze(0);
  const at::Tensor col = coord.repeat({grid}).unsqueeze(1) * omega.unsqueeze(0);
  const at::Tensor patches = at::cat({row.sin(), row.cos(), col.sin(), col.cos()}, 1);
  return at::cat({at::zeros({1, dim}, f64), patches}, 0).unsqueeze(0).to(at::kFloat);
}

void xavier_uniform_(at::Tensor w, std::int64_t fan_in, std::int64_t fan_out) {
  const double bound = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  at::NoGradGuard no_grad;
  w.uniform_(-bound, bound);
}

torch::nn::Linear make_linear(std::int64_t in, std::int64_t out) {
  torch::nn::Linear l(torch::nn::LinearOptions(in, out).bias(true));
  xavier_uniform_(l->weight, in, out);
  at::NoGradGuard no_grad;
  l->bias.zero_();
  return l;
}

torch::nn::LayerNorm make_norm(std::int64_t dim) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6));
}

// Stochastic depth: drops the whole residual branch of a sample with probability p.
at::Tensor drop_path(const at::Tensor& x, double p, bool training) {
  if (p <= 0 || !training) return x;
  const at::Tensor keep = at::empty({x.size(0), 1, 1}, x.options()).bernoulli_(1 - p);
  return x * keep / (1 - p);
}

class Attention : public torch::nn::Module {
 public:
  Attention(std::int64_t dim, std::int64_t heads) : heads_(heads) {
    qkv_ = register_module("qkv", make_linear(dim, 3 * dim));
    // MoCo v3: q, k and v are initialised as three separate dim x dim matrices.
    xavier_uniform_(qkv_->weight, dim, dim);
    proj_ = register_module("proj", make_linear(dim, dim));
  }

  at::Tensor forward(const at::Tensor& x) {
    const auto B = x.size(0), T = x.size(1), D = x.size(2), hd = D / heads_;
    const at::Tensor qkv = qkv_->forward(x).view({B, T, 3, heads_, hd}).permute({2, 0, 3, 1, 4});
    const at::Tensor q = qkv.select(0, 0) * (1.0 / std::sqrt(static_cast<double>(hd)));
    const at::Tensor attn = at::softmax(at::matmul(q, qkv.select(0, 1).transpose(-2, -1)), -1);
    const at::Tensor out = at::matmul(attn, qkv.select(0, 2)).transpose(1, 2).reshape({B, T, D});
    return proj_->forward(out);
  }

 private:
  std::int64_t heads_;
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr};
};

class Block : public torch::nn::Module {
 public:
  Block(std::int64_t dim, std::int64_t heads, std::int64_t hidden, double drop_path,
        std::shared_ptr<wb::MoeLayer> moe)
      : drop_path_(drop_path), moe_(std::move(moe)) {
    norm1_ = register_module("norm1", make_norm(dim));
    attn_ = register_module("attn", std::make_shared<Attention>(dim, heads));
    norm2_ = register_module("norm2", make_norm(dim));
    if (moe_) {
      register_module("moe", moe_);
    } else {
      fc1_ = register_module("fc1", make_linear(dim, hidden));
      fc2_ = register_module("fc2", make_linear(hidden, dim));
    }
  }

  at::Tensor forward(at::Tensor x, const wb::RoutingContext& context,
                     std::vector<wb::Routing>& routings) {
    x = x + drop_path(attn_->forward(norm1_->forward(x)), drop_path_, is_training());
    const at::Tensor h = norm2_->forward(x);
    at::Tensor y;
    if (moe_) {
      auto out = moe_->forward(h, context);
      y = out.first;
      routings.push_back(std::move(out.second));
    } else {
      // fc2(gelu(fc1(h))), computed in row blocks (several times faster on the CPU).
      const at::Tensor rows = h.reshape({-1, h.size(2)});
      y = wb::blocked_mlp(rows, fc1_->weight.t(), fc1_->bias, fc2_->weight.t(), fc2_->bias)
              .view(h.sizes());
    }
    return x + drop_path(y, drop_path_, is_training());
  }

  const std::shared_ptr<wb::MoeLayer>& moe() const { return moe_; }

 private:
  double drop_path_;
  torch::nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
  std::shared_ptr<Attention> attn_;
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
  std::shared_ptr<wb::MoeLayer> moe_;
};

class Vit : public wb::Backbone {
 public:
  Vit(const wb::Params& p, const wb::BackboneContext& context)
      : channels_(context.channels),
        patch_(p.integer("patch")),
        dim_(p.integer("dim")),
        experts_(p.integer("experts")) {
    const auto depth = p.integer("depth"), heads = p.integer("heads");
    if (context.image_size % patch_ != 0)
      fail("image size " + std::to_string(context.image_size) +
           " is not a multiple of patch = " + std::to_string(patch_));
    if (dim_ % heads != 0)
      fail("dim = " + std::to_string(dim_) +
           " is not a multiple of heads = " + std::to_string(heads));
    if (dim_ % 4 != 0)
      fail("dim = " + std::to_string(dim_) + " must be a multiple of 4 (2-D sin-cos positions)");
    grid_ = context.image_size / patch_;
    mlp_hidden_ =
        static_cast<std::int64_t>(std::llround(static_cast<double>(dim_) * p.real("mlp_ratio")));
    // A ratio, not a width: the same setting is right at every model width (Table 2's sep-ViT).
    expert_hidden_ =
        std::max<std::int64_t>(1, std::llround(static_cast<double>(dim_) * p.real("expert_ratio")));
    moe_blocks_ = moe_placement(p, depth, experts_);
    if (experts_ > 0 && !context.make_gate)
      fail("experts > 0 but the context has no gate maker (BackboneContext::make_gate)");

    patch_embed_ = register_module(
        "patch_embed",
        torch::nn::Conv2d(torch::nn::Conv2dOptions(channels_, dim_, patch_).stride(patch_)));
    xavier_uniform_(patch_embed_->weight, channels_ * patch_ * patch_, dim_);
    {
      at::NoGradGuard no_grad;
      patch_embed_->bias.zero_();
    }
    cls_ = register_parameter("cls_token", at::randn({1, 1, dim_}) * 1e-6);
    positions_ = register_buffer("pos_embed", sincos_positions(grid_, dim_));

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
      blocks_.push_back(
          register_module("block" + std::to_string(i),
                          std::make_shared<Block>(dim_, heads, mlp_hidden_, rate, std::move(moe))));
    }
    norm_ = register_module("norm", make_norm(dim_));
  }

  wb::BackboneOutput forward(const at::Tensor& images, const wb::RoutingContext& context) override {
    const auto size = grid_ * patch_;
    if (images.dim() != 4 || images.size(1) != channels_ || images.size(2) != size ||
        images.size(3) != size)
      fail("expects images [B, " + std::to_string(channels_) + ", " + std::to_string(size) + ", " +
           std::to_string(size) + "], got " + std::to_string(images.dim()) + " dims");
    const auto B = images.size(0);
    at::Tensor x = patch_embed_->forward(images).flatten(2).transpose(1, 2);  // [B, N, D]
    x = at::cat({cls_.expand({B, 1, dim_}), x}, 1) + positions_;
    wb::BackboneOutput out;
    for (auto& block : blocks_) x = block->forward(x, context, out.routings);
    x = norm_->forward(x);
    out.cls = x.select(1, 0);
    out.patches = x.narrow(1, 1, grid_ * grid_);
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
  torch::nn::Conv2d patch_embed_{nullptr};
  at::Tensor cls_, positions_;
  std::vector<std::shared_ptr<Block>> blocks_;
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
}
