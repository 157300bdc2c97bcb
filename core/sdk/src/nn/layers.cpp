// The shared model building blocks (workbench/layers.h).
#include "workbench/layers.h"

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>
#include <string>

namespace wb {

void xavier_uniform_(at::Tensor weight, std::int64_t fan_in, std::int64_t fan_out) {
  const double bound = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  at::NoGradGuard no_grad;
  weight.uniform_(-bound, bound);
}

torch::nn::Linear xavier_linear(std::int64_t in, std::int64_t out) {
  torch::nn::Linear l(torch::nn::LinearOptions(in, out).bias(true));
  xavier_uniform_(l->weight, in, out);
  at::NoGradGuard no_grad;
  l->bias.zero_();
  return l;
}

torch::nn::LayerNorm layer_norm(std::int64_t dim) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6));
}

at::Tensor l2_normalize(const at::Tensor& x, std::int64_t dim, double eps) {
  return x / x.norm(2, {dim}, /*keepdim=*/true).clamp_min(eps);
}

at::Tensor drop_path(const at::Tensor& x, double p, bool training) {
  if (p <= 0 || !training) return x;
  std::vector<std::int64_t> shape(static_cast<std::size_t>(x.dim()), 1);
  shape[0] = x.size(0);
  const at::Tensor keep = at::empty(shape, x.options()).bernoulli_(1 - p);
  return x * keep / (1 - p);
}

at::Tensor sincos_positions(std::int64_t grid, std::int64_t dim, SinCosLayout layout,
                            bool cls_token) {
  if (grid < 1 || dim < 4 || dim % 4 != 0)
    throw std::invalid_argument("sincos_positions: needs grid >= 1 and a dim divisible by 4, got " +
                                std::to_string(grid) + " and " + std::to_string(dim));
  const auto q = dim / 4;
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor omega = at::pow(10000.0, -at::arange(q, f64) / static_cast<double>(q));
  const at::Tensor coord = at::arange(grid, f64);
  const at::Tensor row = coord.repeat_interleave(grid).unsqueeze(1) * omega.unsqueeze(0);
  const at::Tensor col = coord.repeat({grid}).unsqueeze(1) * omega.unsqueeze(0);
  const at::Tensor first = layout == SinCosLayout::MocoV3 ? row : col;
  const at::Tensor second = layout == SinCosLayout::MocoV3 ? col : row;
  at::Tensor out = at::cat({first.sin(), first.cos(), second.sin(), second.cos()}, 1);
  if (cls_token) out = at::cat({at::zeros({1, dim}, f64), out}, 0);
  return out.unsqueeze(0).to(at::kFloat);
}

PatchEmbed::PatchEmbed(std::int64_t channels, std::int64_t dim, std::int64_t patch)
    : torch::nn::Conv2dImpl(torch::nn::Conv2dOptions(channels, dim, patch).stride(patch)) {
  xavier_uniform_(weight, channels * patch * patch, dim);
  at::NoGradGuard no_grad;
  bias.zero_();
}

at::Tensor PatchEmbed::tokens(const at::Tensor& images) {
  return forward(images).flatten(2).transpose(1, 2);
}

Attention::Attention(std::int64_t dim, std::int64_t heads) : heads_(heads) {
  if (heads < 1 || dim % heads != 0)
    throw std::invalid_argument("Attention: dim = " + std::to_string(dim) +
                                " is not a multiple of heads = " + std::to_string(heads));
  qkv_ = register_module("qkv", xavier_linear(dim, 3 * dim));
  // MoCo v3: q, k and v are initialised as three separate dim x dim matrices.
  xavier_uniform_(qkv_->weight, dim, dim);
  proj_ = register_module("proj", xavier_linear(dim, dim));
}

at::Tensor at_least_fp32(const at::Tensor& x) {
  return x.to(at::promote_types(x.scalar_type(), at::kFloat));
}

at::Tensor Attention::forward(const at::Tensor& x) {
  const auto B = x.size(0), T = x.size(1), D = x.size(2), hd = D / heads_;
  const at::Tensor qkv = qkv_->forward(x).view({B, T, 3, heads_, hd}).permute({2, 0, 3, 1, 4});
  const at::Tensor q = qkv.select(0, 0) * (1.0 / std::sqrt(static_cast<double>(hd)));
  const at::Tensor scores = at::matmul(q, qkv.select(0, 1).transpose(-2, -1));
  // The softmax in fp32 under bf16 autocast; the product with v casts it back.
  const at::Tensor attn = at::softmax(at_least_fp32(scores), -1).to(scores.scalar_type());
  const at::Tensor out = at::matmul(attn, qkv.select(0, 2)).transpose(1, 2).reshape({B, T, D});
  return proj_->forward(out);
}

at::Tensor mlp_forward(const at::Tensor& x, torch::nn::Linear& fc1, torch::nn::Linear& fc2) {
  const at::Tensor rows = x.reshape({-1, x.size(-1)});
  const at::Tensor y = blocked_mlp(rows, fc1->weight.t(), fc1->bias, fc2->weight.t(), fc2->bias);
  std::vector<std::int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = y.size(1);
  return y.view(shape);
}

Mlp::Mlp(std::int64_t dim, std::int64_t hidden) {
  fc1_ = register_module("fc1", xavier_linear(dim, hidden));
  fc2_ = register_module("fc2", xavier_linear(hidden, dim));
}

Block::Block(std::int64_t dim, std::int64_t heads, std::int64_t hidden, double drop_path,
             std::shared_ptr<MoeLayer> moe)
    : drop_path_(drop_path), moe_(std::move(moe)) {
  norm1_ = register_module("norm1", layer_norm(dim));
  attn_ = register_module("attn", std::make_shared<Attention>(dim, heads));
  norm2_ = register_module("norm2", layer_norm(dim));
  if (moe_) {
    register_module("moe", moe_);
  } else {
    fc1_ = register_module("fc1", xavier_linear(dim, hidden));
    fc2_ = register_module("fc2", xavier_linear(hidden, dim));
  }
}

at::Tensor Block::forward(at::Tensor x, const RoutingContext& context,
                          std::vector<Routing>& routings) {
  x = x + drop_path(attn_->forward(norm1_->forward(x)), drop_path_, is_training());
  const at::Tensor h = norm2_->forward(x);
  at::Tensor y;
  if (moe_) {
    auto out = moe_->forward(h, context);
    y = out.first;
    routings.push_back(std::move(out.second));
  } else {
    y = mlp_forward(h, fc1_, fc2_);
  }
  return x + drop_path(y, drop_path_, is_training());
}

MlpHead::MlpHead(std::int64_t in, std::int64_t hidden, std::int64_t out, int layers) {
  if (layers < 1) throw std::invalid_argument("MlpHead: needs at least one layer");
  for (int i = 0; i < layers; ++i) {
    const bool last = i == layers - 1;
    const std::int64_t a = i == 0 ? in : hidden, b = last ? out : hidden;
    fc_.push_back(register_module("fc" + std::to_string(i),
                                  torch::nn::Linear(torch::nn::LinearOptions(a, b).bias(false))));
    bn_.push_back(
        register_module("bn" + std::to_string(i),
                        torch::nn::BatchNorm1d(torch::nn::BatchNorm1dOptions(b).affine(!last))));
  }
}

at::Tensor synced_batch_norm(const at::Tensor& x, torch::nn::BatchNorm1dImpl& bn,
                             Communicator& comm) {
  if (!bn.is_training() || x.dim() != 2) return bn.forward(x);
  const auto& o = bn.options;
  // Two passes (mean, then the centred squares) rather than E[x^2] - E[x]^2: no cancellation.
  const at::Tensor count = at::full({1}, static_cast<double>(x.size(0)), x.options());
  const at::Tensor sums = comm.all_reduce_sum(at::cat({x.sum(0), count}));
  const at::Tensor n = sums.narrow(0, x.size(1), 1);
  const at::Tensor mean = sums.narrow(0, 0, x.size(1)) / n;
  const at::Tensor centred = x - mean;
  const at::Tensor var = comm.all_reduce_sum(centred.pow(2).sum(0)) / n;
  at::Tensor y = centred * at::rsqrt(var + o.eps());
  if (o.affine()) y = y * bn.weight + bn.bias;
  if (o.track_running_stats()) {
    at::NoGradGuard no_grad;
    const double m = o.momentum().value_or(0.1);
    bn.running_mean.mul_(1 - m).add_(mean.detach(), m);
    bn.running_var.mul_(1 - m).add_((var * n / (n - 1).clamp_min(1)).detach(), m);
    bn.num_batches_tracked.add_(1);
  }
  return y;
}

at::Tensor MlpHead::forward(at::Tensor x) {
  return forward(std::move(x), nullptr);
}

at::Tensor MlpHead::forward(at::Tensor x, Communicator* sync) {
  const bool synced = sync && sync->world_size() > 1 && is_training();
  for (std::size_t i = 0; i < fc_.size(); ++i) {
    x = fc_[i]->forward(x);
    x = synced ? synced_batch_norm(x, *bn_[i], *sync) : bn_[i]->forward(x);
    if (i + 1 < fc_.size()) x = at::relu(x);
  }
  return x;
}

at::Tensor MlpHead::first_layer(const at::Tensor& x) {
  return at::relu(bn_.front()->forward(fc_.front()->forward(x)));
}

std::vector<at::Tensor> MlpHead::first_layer_parameters() {
  std::vector<at::Tensor> out = fc_.front()->parameters();
  for (const auto& p : bn_.front()->parameters()) out.push_back(p);
  return out;
}

std::int64_t MlpHead::first_width() const {
  return fc_.front()->options.out_features();
}

}  // namespace wb
