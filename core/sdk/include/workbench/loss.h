// Loss plugins read the outputs of a training step (every view through the online encoder and,
// when asked for, through the momentum encoder) and return their weighted contribution.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "workbench/backbone.h"
#include "workbench/batch.h"
#include "workbench/comm.h"
#include "workbench/matcher.h"
#include "workbench/params.h"
#include "workbench/validation.h"  // LossRequirements

namespace wb {

using MatcherMaker = std::function<std::shared_ptr<Matcher>(const PluginRef&)>;

struct LossContext {
  std::int64_t feature_dim = 0;
  std::int64_t classes = 0;
  std::int64_t patch_grid = 0;
  std::int64_t channels = 0;    // of the images the backbone reads
  std::int64_t image_size = 0;  // their side in pixels (patch size = image_size / patch_grid)
  std::int64_t moe_layers = 0;
  std::int64_t experts = 0;
  double temperature = 0;  // train.temperature: the tau of every contrastive term (> 0)
  MatcherMaker make_matcher;
  Communicator* comm = nullptr;  // never null when the loss is used
};

struct StepState {
  const Batch* batch = nullptr;
  std::vector<BackboneOutput> online;    // one per view, with gradients; under a mask
                                         // (mask_ratio > 0) each holds its view's keep
  std::vector<BackboneOutput> momentum;  // one per view (no gradients) or empty
  std::int64_t step = 0, total_steps = 1;
  double progress = 0;  // step / total_steps in [0, 1]
  Communicator* comm = nullptr;
};

// A logged value: a scalar tensor (detached; it stays on the device and the trainer reads all of
// a logging interval's values at once, so a step never waits for the device) or a plain number.
// value() reads the tensor back: for tests and reports, never inside a training step.
class Metric {
 public:
  Metric() = default;
  Metric(double number) : number_(number) {}  // NOLINT: implicit, as a number is a metric
  Metric(const at::Tensor& tensor) : tensor_(tensor.detach()) {}  // NOLINT
  bool is_tensor() const { return tensor_.defined(); }
  const at::Tensor& tensor() const { return tensor_; }
  double value() const { return tensor_.defined() ? tensor_.item<double>() : number_; }
  operator double() const { return value(); }  // NOLINT: tests compare metrics to numbers

 private:
  at::Tensor tensor_;
  double number_ = 0;
};

struct LossResult {
  at::Tensor value;                       // weighted scalar added to the total loss
  std::map<std::string, Metric> metrics;  // logged as "<loss>/<metric>", e.g. unweighted terms
};

class Loss : public torch::nn::Module {
 public:
  virtual LossRequirements requirements() const = 0;
  virtual LossResult compute(const StepState& state) = 0;
  // Called every step, before the key forward, with the current momentum m (MoCo's heads).
  virtual void momentum_update(double /*m*/) {}
  // Self-supervised heads that fine-tuning starts from (semi-supervised 10 %: MoCo's projector
  // up to its first layer, Linear-BN-ReLU). finetune_dim() is 0 when the loss has none;
  // finetune_forward maps the image feature [B, D] to [B, finetune_dim()], with gradients.
  virtual std::int64_t finetune_dim() const { return 0; }
  virtual at::Tensor finetune_forward(const at::Tensor& /*cls*/) { return {}; }
  virtual std::vector<at::Tensor> finetune_parameters() { return {}; }

  // Losses that train a classifier say so and give class logits from the image feature.
  virtual bool classifies() const { return false; }
  virtual at::Tensor predict(const BackboneOutput& /*features*/) { return {}; }

  // Losses that reconstruct images from masked encodings (MAE) say so. reconstruct() gets the
  // images [B, C, H, W] as the backbone saw them and their encoding under a mask (features.keep
  // set) and returns the reconstruction of every patch as images [B, C, H, W] in the same
  // (normalised) pixel space; the visible patches are the decoder's output too, not copies.
  virtual bool reconstructs() const { return false; }
  virtual at::Tensor reconstruct(const at::Tensor& /*images*/, const BackboneOutput& /*features*/) {
    return {};
  }
};

}  // namespace wb
