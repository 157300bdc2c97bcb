// The sparse MoE feed-forward layer that backbone plugins place in their blocks. Experts are
// Linear(d->h) -> GELU -> Linear(h->d) stored as stacked weights; tokens are grouped by expert
// so every expert runs one matrix product on exactly its tokens.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <utility>

#include "workbench/gate.h"
#include "workbench/routing.h"

namespace wb {

class MoeLayer : public torch::nn::Module {
 public:
  MoeLayer(std::int64_t dim, std::int64_t hidden, std::int64_t experts, std::shared_ptr<Gate> gate);

  // x: [B, N, D]. Returns the combined expert outputs [B, N, D] (0 for fully dropped tokens,
  // which then pass on the residual only) and the routing the gate chose.
  std::pair<at::Tensor, Routing> forward(const at::Tensor& x, const RoutingContext& context);

  std::int64_t experts() const { return w1_.size(0); }
  std::int64_t hidden() const { return w1_.size(2); }
  Gate& gate() { return *gate_; }

  at::Tensor w1_, b1_, w2_, b2_;  // [E, D, H], [E, H], [E, H, D], [E, D]

 private:
  std::shared_ptr<Gate> gate_;
};

// Runs the experts on their tokens and combines: y[t] = sum_j weights[t, j] * E_{experts[t,
// j]}(x[t]) over kept assignments. x: [T, D]. Exposed for tests and benchmarks.
at::Tensor dispatch_combine(const at::Tensor& x, const Routing& routing, const at::Tensor& w1,
                            const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2);

// The dense MLP gelu(x·w1 + b1)·w2 + b2 of x [T, D] (w1 [D, H], b1 [H], w2 [H, D], b2 [D];
// transposed views of nn::Linear weights are fine), with the values and gradients of the plain
// expression. On the CPU it is computed in blocks of `block` rows (0 = the default, 1024) spread
// over the threads, which avoids [T, H] temporaries: several times faster there at ViT sizes.
at::Tensor blocked_mlp(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                       const at::Tensor& w2, const at::Tensor& b2, std::int64_t block = 0);

}  // namespace wb
