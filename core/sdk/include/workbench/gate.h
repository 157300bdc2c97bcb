// Gate plugins decide which experts each token of a MoE layer goes to.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>

#include "workbench/routing.h"

namespace wb {

// Shape of the MoE layer a gate is made for.
struct GateShape {
  std::int64_t dim = 0;      // token width d
  std::int64_t experts = 0;  // E
  std::int64_t layer = 0;    // index of this MoE layer among the backbone's MoE layers
  // MoCE: [m, D_c] float centroids of the run's clustering (data.clusters), fixed; undefined
  // when the run names no clustering.
  at::Tensor centroids{};
};

class Gate : public torch::nn::Module {
 public:
  // x: [T, D] tokens of one MoE layer. Must fill experts, weights, kept, gates, probs and aux;
  // logits where the gate has them.
  virtual Routing route(const at::Tensor& x, const GateInput& input) = 0;
  virtual std::int64_t k() const = 0;
};

}  // namespace wb
