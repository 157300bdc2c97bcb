// The routing contract between a MoE layer, its gate, and whoever reads routings afterwards
// (losses, routing statistics, probes). Token layout everywhere: token 0 of each image is the
// CLS token, tokens 1..N its patches in row-major order; T = B * tokens_per_image.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>

namespace wb {

// Per forward pass, given to the backbone and passed through to every MoE layer. (It carries
// more than routing now, the MAE mask; the name stays so that plugins keep compiling.)
struct RoutingContext {
  at::Tensor view;     // [B] int64: which augmented view each image is; undefined = all view 0
  at::Tensor cluster;  // [B] int64: cluster id of each image (MoCE); undefined when none
  // [B, K] int64: the visible patches of each image (MAE masking, docs/methods.md §8), 0-based
  // row-major patch indices in ascending order; the backbone encodes only these (and CLS), so
  // MoE layers route only visible tokens. Undefined = every patch.
  at::Tensor keep;
  bool training = true;
  bool expert_outputs = false;  // MoE layers also report every expert's output (distillation)
};

// Per MoE layer: what the gate sees beside the tokens themselves.
struct GateInput {
  at::Tensor image;    // [T] int64: image index of each token
  at::Tensor view;     // [B] int64 or undefined (see RoutingContext)
  at::Tensor cluster;  // [B] int64 or undefined
  std::int64_t tokens_per_image = 0;
  bool training = true;
};

// A gate's decision for T tokens over E experts with k choices per token.
struct Routing {
  at::Tensor experts;  // [T, k] int64: chosen experts, first choice first
  at::Tensor weights;  // [T, k] float: combine weights (differentiable); 0 where dropped
  at::Tensor kept;     // [T, k] bool: false where the assignment was dropped for capacity
  at::Tensor gates;    // [T, E] sparse gate vector: probabilities at the top-k experts, 0 elsewhere
  at::Tensor probs;    // [T, E] dense gate vector (softmax over all experts)
  at::Tensor logits;   // [T, E] the logits that routed (after any training noise); optional
  at::Tensor tokens;   // [T, D] the layer's input tokens (no copy), for feature-based matchers
  std::map<std::string, at::Tensor> aux;  // unweighted auxiliary losses, e.g. "importance", "load"
  // [E, T, D] every expert's output for every token, with gradients, when
  // RoutingContext::expert_outputs asked for it (MoCE's distillation); undefined otherwise.
  at::Tensor expert_outputs;
  std::int64_t tokens_per_image = 0;
  std::int64_t num_experts() const { return probs.defined() ? probs.size(1) : 0; }
};

}  // namespace wb
