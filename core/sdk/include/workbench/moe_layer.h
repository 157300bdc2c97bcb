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

class Communicator;

class MoeLayer : public torch::nn::Module {
 public:
  MoeLayer(std::int64_t dim, std::int64_t hidden, std::int64_t experts, std::shared_ptr<Gate> gate);

  // x: [B, N, D]. Returns the combined expert outputs [B, N, D] (0 for fully dropped tokens,
  // which then pass on the residual only) and the routing the gate chose.
  std::pair<at::Tensor, Routing> forward(const at::Tensor& x, const RoutingContext& context);

  std::int64_t experts() const { return comm_ ? experts_ : w1_.size(0); }  // E, on all ranks
  std::int64_t hidden() const { return w1_.size(2); }
  Gate& gate() { return *gate_; }

  // Expert parallelism (docs/scale.md): keeps only this rank's experts [r E/N, (r+1) E/N) of the
  // N ranks of `comm` (which must outlive the layer's use), so that w1_ ... b2_ hold E/N
  // experts and the forward exchanges tokens with the other ranks. Throws when N does not
  // divide E. Every rank's layer must hold the same weights before.
  void shard_experts(Communicator& comm);
  // The inverse, collective: every rank gets all E experts back (for evaluation and export).
  void gather_experts();
  bool expert_parallel() const { return comm_ != nullptr; }

  // Held here: all E, or this rank's E/N when expert-parallel.
  at::Tensor w1_, b1_, w2_, b2_;  // [E, D, H], [E, H], [E, H, D], [E, D]

 private:
  std::shared_ptr<Gate> gate_;
  Communicator* comm_ = nullptr;  // set while the experts are sharded
  std::int64_t experts_ = 0;      // E while sharded
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
