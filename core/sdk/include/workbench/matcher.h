// Patch-matching plugins pair each patch of a query view with a patch of the key view of the
// same image (OGAR's patch term). Overlap and FSM are two; others drop in unchanged.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "workbench/batch.h"

namespace wb {

struct MatchInput {
  std::int64_t grid = 0;   // patches per side
  std::int64_t layer = 0;  // MoE layer index (matchers may match per layer)
  const ViewGeometry* query_view = nullptr;
  const ViewGeometry* key_view = nullptr;
  at::Tensor query_features, key_features;  // [B, N, D] the layer's input patch tokens
  at::Tensor query_gates, key_gates;        // [B, N, E] the layer's gate vectors (patches only)
};

struct Match {
  at::Tensor index;  // [B, N] int64: key patch paired with each query patch
  at::Tensor valid;  // [B, N] bool: whether the pair counts
};

class Matcher {
 public:
  virtual ~Matcher() = default;
  virtual Match match(const MatchInput& input) = 0;
  // False when the match depends only on geometry: OGAR then computes it once for all layers.
  virtual bool per_layer() const { return false; }
};

}  // namespace wb
