// The part of the noisy top-k router after the logits: training noise, softmax, top-k, the
// combine weights and V-MoE's importance and load losses. Two implementations of the same
// function: op by op (LibTorch operations that autograd records; any device and dtype, and the
// reference), and fused for float32/float64 CPU tensors: one autograd node with a hand-written
// backward, whose top-k, combine weights, gates and loss statistics take one pass over each
// token's E logits forward and one backward, beside LibTorch's vectorised softmax, erfc and exp
// on whole tensors. It replaces some forty operations on [T, E] tensors and their autograd nodes.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace noisy_topk {

struct TopK {
  at::Tensor noisy;       // [T, E] the logits that routed (after the noise; the logits without it)
  at::Tensor probs;       // [T, E] softmax(noisy)
  at::Tensor experts;     // [T, k] int64: the k largest noisy logits, largest first
  at::Tensor top_probs;   // [T, k] probs at those experts
  at::Tensor gates;       // [T, E] top_probs at their experts, 0 elsewhere
  at::Tensor importance;  // [] CV² of Σ_t probs (clean: of Σ_t softmax(logits))
  at::Tensor load;        // [] V-MoE's load loss; undefined without noise (sigma = 0)
};

// logits: [T, E] W·x without noise; sigma: the noise std (0 = none, no load loss); clean: the
// importance loss sums softmax(logits) instead of the noisy probabilities (only with noise).
// The noise is at::randn_like(logits) · sigma in both, so that one seed gives both one draw.
TopK topk_ops(const at::Tensor& logits, double sigma, std::int64_t k, bool clean);
TopK topk_fused(const at::Tensor& logits, double sigma, std::int64_t k, bool clean);

// Whether topk_fused takes these logits: a [T, E] float32 or float64 CPU tensor.
bool fused_applies(const at::Tensor& logits);

}  // namespace noisy_topk
