// Building blocks that backbone and loss plugins share (docs/methods.md §1, §4): the pieces of
// MoCo v3's ViT (patch embedding, attention, the pre-norm transformer block with a dense MLP or
// a MoE layer, 2-D sin-cos positions, stochastic depth), MoCo v3's MLP heads, L2 normalisation
// and the Xavier initialisers. Module and parameter names are part of the checkpoint format:
// they stay as documented here.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "workbench/comm.h"
#include "workbench/moe_layer.h"
#include "workbench/routing.h"

namespace wb {

// ---- initialisation and small functions -------------------------------------------------------

// Uniform in ±sqrt(6 / (fan_in + fan_out)), in place and without recording gradients.
void xavier_uniform_(at::Tensor weight, std::int64_t fan_in, std::int64_t fan_out);
// Linear with bias, Xavier-uniform weight and zero bias (MoCo v3's ViT initialisation).
torch::nn::Linear xavier_linear(std::int64_t in, std::int64_t out);
// LayerNorm over the last dimension with eps 1e-6 (MoCo v3, timm's ViT).
torch::nn::LayerNorm layer_norm(std::int64_t dim);

// x / max(||x||_2, eps) along `dim`: torch.nn.functional.normalize.
at::Tensor l2_normalize(const at::Tensor& x, std::int64_t dim = -1, double eps = 1e-12);

// x in at least fp32: bf16/fp16 become fp32, fp32 and fp64 stay. Under bf16 autocast the
// softmaxes (attention, gates, InfoNCE) run on this (train.precision, docs/methods.md §1).
at::Tensor at_least_fp32(const at::Tensor& x);

// Stochastic depth: zeroes the whole residual branch of a sample with probability p and scales
// the kept ones by 1 / (1 - p); the identity when p = 0 or not training. x: [B, ...].
at::Tensor drop_path(const at::Tensor& x, double p, bool training);

// ---- positions --------------------------------------------------------------------------------

// Two layouts of the same fixed 2-D sin-cos positions. With w_i = 10000^(-i / (dim / 4)),
// i < dim / 4, patch (r, c) of the g x g grid (row-major) gets
//   MocoV3: [sin(r w), cos(r w), sin(c w), cos(c w)]   (moco-v3 vits.py)
//   Mae:    [sin(c w), cos(c w), sin(r w), cos(r w)]   (MAE pos_embed.py: column half first)
enum class SinCosLayout { MocoV3, Mae };

// [1, g*g, dim] float, or [1, 1 + g*g, dim] with a first row of zeros for the CLS token.
// dim must be a multiple of 4.
at::Tensor sincos_positions(std::int64_t grid, std::int64_t dim,
                            SinCosLayout layout = SinCosLayout::MocoV3, bool cls_token = true);

// ---- ViT pieces -------------------------------------------------------------------------------

// Non-overlapping patches of `patch` pixels embedded by one strided convolution (registered as a
// Conv2d: parameters "weight" [dim, channels, patch, patch] and "bias"), Xavier-uniform over
// fan_in = channels * patch², fan_out = dim, zero bias.
class PatchEmbed : public torch::nn::Conv2dImpl {
 public:
  PatchEmbed(std::int64_t channels, std::int64_t dim, std::int64_t patch);
  // images [B, C, H, W] -> tokens [B, (H / patch) * (W / patch), dim], patches row-major.
  at::Tensor tokens(const at::Tensor& images);
};

// Multi-head self-attention with a fused qkv projection (with bias) and an output projection:
// modules "qkv" and "proj". q, k and v are initialised as three separate dim x dim matrices.
class Attention : public torch::nn::Module {
 public:
  Attention(std::int64_t dim, std::int64_t heads);
  at::Tensor forward(const at::Tensor& x);  // [B, T, dim] -> [B, T, dim]

 private:
  std::int64_t heads_;
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr};
};

// gelu(x fc1) fc2 (exact GELU) over the last dimension of x, computed in row blocks
// (wb::blocked_mlp): several times faster than the plain expression on the CPU.
at::Tensor mlp_forward(const at::Tensor& x, torch::nn::Linear& fc1, torch::nn::Linear& fc2);

// The dense MLP of a transformer block as a module of its own: "fc1" (dim -> hidden), "fc2".
class Mlp : public torch::nn::Module {
 public:
  Mlp(std::int64_t dim, std::int64_t hidden);
  at::Tensor forward(const at::Tensor& x) { return mlp_forward(x, fc1_, fc2_); }

 private:
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};

// A pre-norm transformer block: x + drop_path(attn(norm1(x))), then
// x + drop_path(ffn(norm2(x))) where ffn is a dense MLP or a MoE layer. Modules: "norm1",
// "attn", "norm2", then either "fc1", "fc2" (the dense MLP, held by the block itself) or "moe".
class Block : public torch::nn::Module {
 public:
  // moe null: a dense MLP of `hidden` units.
  Block(std::int64_t dim, std::int64_t heads, std::int64_t hidden, double drop_path,
        std::shared_ptr<MoeLayer> moe = nullptr);

  // x [B, T, dim]. A MoE block appends its routing to `routings`. Stochastic depth follows
  // the module's train() / eval() state.
  at::Tensor forward(at::Tensor x, const RoutingContext& context, std::vector<Routing>& routings);

  const std::shared_ptr<MoeLayer>& moe() const { return moe_; }

 private:
  double drop_path_;
  torch::nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
  std::shared_ptr<Attention> attn_;
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
  std::shared_ptr<MoeLayer> moe_;
};

// ---- heads ------------------------------------------------------------------------------------

// Batch norm over the global batch of all ranks (MoCo v3's SyncBatchNorm; docs/scale.md): the
// mean and the biased variance come from sums over ranks (comm.all_reduce_sum, whose backward
// sums the gradients over ranks too), so values and gradients equal `bn` on the joint batch in
// one process. The running statistics move as in BatchNorm1d (unbiased variance). In training
// mode only; eval mode uses the running statistics, as `bn` does.
at::Tensor synced_batch_norm(const at::Tensor& x, torch::nn::BatchNorm1dImpl& bn,
                             Communicator& comm);

// MoCo v3's _build_mlp: `layers` bias-free Linears, each followed by BatchNorm1d, with ReLU
// between; the last BN has no affine parameters. Modules "fc<i>", "bn<i>".
class MlpHead : public torch::nn::Module {
 public:
  MlpHead(std::int64_t in, std::int64_t hidden, std::int64_t out, int layers);
  at::Tensor forward(at::Tensor x);
  // With `sync` set (and in training mode), every BN normalises over the ranks' global batch.
  at::Tensor forward(at::Tensor x, Communicator* sync);

  // The first Linear-BN-ReLU alone (where semi-supervised fine-tuning starts) and its
  // parameters; its output width.
  at::Tensor first_layer(const at::Tensor& x);
  std::vector<at::Tensor> first_layer_parameters();
  std::int64_t first_width() const;

 private:
  std::vector<torch::nn::Linear> fc_;
  std::vector<torch::nn::BatchNorm1d> bn_;
};

}  // namespace wb
