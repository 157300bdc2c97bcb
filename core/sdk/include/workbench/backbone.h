// Backbone plugins turn images into features and report the routing of each of their MoE layers.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "workbench/gate.h"
#include "workbench/routing.h"

namespace wb {

struct BackboneOutput {
  at::Tensor cls;                 // [B, D] image feature: CLS token after the final norm
  at::Tensor patches;             // [B, N, D] patch tokens after the final norm; [B, K, D]
                                  // when the context had a mask: the visible ones, in keep order
  std::vector<Routing> routings;  // one per MoE layer, in block order
  at::Tensor keep;                // [B, K] int64: RoutingContext::keep echoed, or undefined
};

struct ModelCost {
  std::int64_t parameters = 0;         // all parameters
  std::int64_t active_parameters = 0;  // parameters one token passes through
  // Forward multiply-accumulates (MACs) per image, attention included: what the papers call
  // FLOPs (ViT-S/16 at 224 px = 4.6 G; counting 2 FLOPs per MAC would give 9.2 G).
  double flops_per_image = 0;
};

// Makes the gate of one MoE layer from the run's [gate] table; the backbone never names a gate.
using GateMaker = std::function<std::shared_ptr<Gate>(const GateShape&)>;

struct BackboneContext {
  std::int64_t channels = 1;
  std::int64_t image_size = 28;
  GateMaker make_gate;
};

class Backbone : public torch::nn::Module {
 public:
  // With context.keep set, encodes only the visible patches (plus CLS): patches and every
  // routing hold K + 1 tokens per image, and the output echoes keep.
  virtual BackboneOutput forward(const at::Tensor& images, const RoutingContext& context) = 0;
  virtual std::int64_t feature_dim() const = 0;
  virtual std::int64_t patch_grid() const = 0;               // g: patches per side
  virtual std::vector<std::int64_t> moe_blocks() const = 0;  // indices of the MoE blocks
  virtual std::int64_t experts() const = 0;                  // experts per MoE layer, 0 if dense
  virtual ModelCost cost() const = 0;
  // MoCo v3's random patch projection: the patch embedding stays at its initial weights.
  virtual void freeze_patch_embedding() = 0;
};

}  // namespace wb
