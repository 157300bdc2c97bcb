// wb::MoeLayer: stacked expert MLPs, the gate that routes to them, and the forward pass that
// connects the two through the routing contract.
#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "moe/expert_parallel.h"
#include "workbench/comm.h"
#include "workbench/moe_layer.h"

namespace wb {

namespace {
// Xavier-uniform for each expert's [fan_in, fan_out] matrix, as the dense ViT MLP is initialised.
at::Tensor xavier_stack(std::int64_t experts, std::int64_t fan_in, std::int64_t fan_out) {
  const double bound = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  return at::empty({experts, fan_in, fan_out}).uniform_(-bound, bound);
}
}  // namespace

MoeLayer::MoeLayer(std::int64_t dim, std::int64_t hidden, std::int64_t experts,
                   std::shared_ptr<Gate> gate)
    : gate_(std::move(gate)) {
  if (dim < 1 || hidden < 1 || experts < 1)
    throw std::invalid_argument("MoeLayer: dim, hidden and experts must be positive (got " +
                                std::to_string(dim) + ", " + std::to_string(hidden) + ", " +
                                std::to_string(experts) + ")");
  if (!gate_) throw std::invalid_argument("MoeLayer: no gate given");
  w1_ = register_parameter("w1", xavier_stack(experts, dim, hidden));
  b1_ = register_parameter("b1", at::zeros({experts, hidden}));
  w2_ = register_parameter("w2", xavier_stack(experts, hidden, dim));
  b2_ = register_parameter("b2", at::zeros({experts, dim}));
  register_module("gate", gate_);
}

std::pair<at::Tensor, Routing> MoeLayer::forward(const at::Tensor& x,
                                                 const RoutingContext& context) {
  if (x.dim() != 3 || x.size(2) != w1_.size(1))
    throw std::invalid_argument("MoeLayer: input must be [B, N, " + std::to_string(w1_.size(1)) +
                                "], got " + std::to_string(x.dim()) + " dims");
  const auto B = x.size(0), N = x.size(1), D = x.size(2);
  const at::Tensor tokens = x.reshape({B * N, D});

  GateInput input;
  // expand, not repeat_interleave: the latter reads its output size back from the device.
  input.image =
      at::arange(B, x.options().dtype(at::kLong)).unsqueeze(1).expand({B, N}).reshape({-1});
  input.view = context.view;
  input.cluster = context.cluster;
  input.tokens_per_image = N;
  input.training = context.training;

  Routing routing = gate_->route(tokens, input);
  routing.tokens = tokens;
  routing.tokens_per_image = N;
  at::Tensor y =
      comm_ ? moe::expert_parallel_combine(tokens, routing, experts_, w1_, b1_, w2_, b2_, *comm_)
            : dispatch_combine(tokens, routing, w1_, b1_, w2_, b2_);
  if (context.expert_outputs) {  // MoCE's distillation: every expert on every token
    if (comm_)
      throw std::invalid_argument(
          "MoeLayer: every expert's output on every token (distillation) is not available with "
          "train.expert_parallel");
    std::vector<at::Tensor> all;
    for (std::int64_t e = 0; e < experts(); ++e)
      all.push_back(blocked_mlp(tokens, w1_[e], b1_[e], w2_[e], b2_[e]));
    routing.expert_outputs = at::stack(all);
  }
  return {y.view({B, N, D}), std::move(routing)};
}

}  // namespace wb
