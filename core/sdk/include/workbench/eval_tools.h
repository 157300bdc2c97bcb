// Building blocks that evaluator plugins share: class-balanced draws of training subsets, many
// linear classifiers trained at once on the same features (one per learning rate), and the
// backbone forward pass of evaluation.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "workbench/backbone.h"
#include "workbench/batch.h"
#include "workbench/data.h"
#include "workbench/evaluator.h"
#include "workbench/format.h"
#include "workbench/stats.h"  // mean_std over seeds
#include "workbench/validation.h"

namespace wb {

// ---- class-balanced subsets -------------------------------------------------------------------

// Indices into a label list: the drawn ones and the rest, each in ascending order.
struct Draw {
  std::vector<std::int64_t> drawn, rest;
};

// Per class round(fraction x count) items at random (seeded), at least 1, and never the whole
// class when it has two or more items (something is always left for the other side).
Draw draw_fraction(const at::Tensor& labels, double fraction, std::uint64_t seed);
// Per class min(k, count) items at random (seeded).
Draw draw_shots(const at::Tensor& labels, std::int64_t k, std::uint64_t seed);
// The same draws restricted to `pool` (indices into labels): what is drawn and what is left
// both come from the pool.
Draw draw_fraction(const at::Tensor& labels, const std::vector<std::int64_t>& pool, double fraction,
                   std::uint64_t seed);

// Labels of every item of a data set, [N] int64, in item order (no image is decoded).
at::Tensor labels_of(const Dataset& data);
// Rows of a feature set.
FeatureSet take(const FeatureSet& set, const std::vector<std::int64_t>& indices);
// Items of a data set, in the order given; `what` is appended to its description.
std::shared_ptr<const Dataset> subset(std::shared_ptr<const Dataset> base,
                                      std::vector<std::int64_t> indices, const std::string& what);
// Images per class [classes], for logs and checks.
std::vector<std::int64_t> class_counts(const at::Tensor& labels, std::int64_t classes);
// max(label) + 1 over one or more label tensors (0 when all are empty).
std::int64_t count_classes(const std::vector<at::Tensor>& labels);

// ---- linear heads ----------------------------------------------------------------------------

struct LinearHeadOptions {
  std::vector<double> lrs{0.1};  // one head per learning rate
  double momentum = 0.9;         // SGD momentum (PyTorch's form: v = m v + g, w -= lr v)
  double weight_decay = 0.0;
  bool batch_norm = true;    // BatchNorm1d without affine before the heads (MoCo v3)
  double bn_momentum = 0.1;  // running statistics, as PyTorch's BatchNorm
  std::uint64_t seed = 0;    // initial weights: normal(0, 0.01), bias 0
  c10::Device device = c10::Device(c10::kCPU);
};

// Linear classifiers over the same features, trained together: one batched matmul gives every
// head's logits, and the softmax cross-entropy gradient is computed in closed form. The
// learning rate of every head follows a half-cosine from its own value to 0 over the steps
// given to set_schedule().
class LinearHeads {
 public:
  LinearHeads(std::int64_t dim, std::int64_t classes, LinearHeadOptions options);

  std::int64_t heads() const { return static_cast<std::int64_t>(options_.lrs.size()); }
  std::int64_t classes() const { return classes_; }
  const std::vector<double>& lrs() const { return options_.lrs; }
  void set_schedule(std::int64_t total_steps);

  // One SGD step of every head on features [B, D] and labels [B] (any device); returns the
  // cross-entropy of every head before the step, [H].
  std::vector<double> step(const at::Tensor& features, const at::Tensor& labels);
  // Logits [H, B, C] in evaluation mode (running batch-norm statistics).
  at::Tensor logits(const at::Tensor& features) const;
  // Top-k accuracy in percent of every head on a feature set (evaluated in chunks).
  std::vector<double> accuracy(const FeatureSet& data, std::int64_t topk = 1) const;

  // Drops every head but `head` (after choosing one on validation data: what is evaluated
  // afterwards, e.g. on the test split, can only be the chosen head).
  void keep_only(std::int64_t head);

  const at::Tensor& weight() const { return weight_; }  // [H, D, C]
  const at::Tensor& bias() const { return bias_; }      // [H, C]

 private:
  at::Tensor batch_normalise(const at::Tensor& x);  // training: batch statistics, kept running
  at::Tensor normalise(const at::Tensor& x) const;  // evaluation: the running statistics

  LinearHeadOptions options_;
  std::int64_t dim_, classes_;
  at::Tensor weight_, bias_, weight_velocity_, bias_velocity_, lr_;
  at::Tensor running_mean_, running_var_;
  std::int64_t step_ = 0, total_steps_ = 1;
};

// Trains heads on frozen features: `epochs` passes of shuffled mini-batches (seeded), the
// schedule spanning all of them. A last batch of a single item is skipped (batch norm needs
// two).
void train_heads(LinearHeads& heads, const FeatureSet& train, std::int64_t epochs,
                 std::int64_t batch, std::uint64_t seed);

// The head with the best validation accuracy (the first one on ties).
std::int64_t best_head(const std::vector<double>& validation_accuracy);

// One evaluation per view index in `views` (the view its forward passes claim; with the
// sep-ViT's fixed gate, the expert path measured), merged into one result: the names of view
// v > 0 get the suffix "_view<v>" (top1_view1), those of view 0 none. Evaluators with a `views`
// parameter share this convention.
inline EvalResult per_view(const std::vector<std::int64_t>& views,
                           const std::function<EvalResult(std::int64_t view)>& one) {
  EvalResult out;
  for (const std::int64_t v : views) {
    const std::string suffix = v == 0 ? "" : "_view" + std::to_string(v);
    EvalResult r = one(v);
    for (auto& [name, value] : r.scalars) out.scalars[name + suffix] = value;
    for (auto& [name, array] : r.arrays) out.arrays[name + suffix] = array;
    for (auto& file : r.files) out.files.push_back(file);
  }
  return out;
}

// The check of a `views` parameter before anything runs (Registry::add_check): every view index
// must be one the gate routes (ValidationContext::routed_views; the fixed gate routes one view
// per expert). Evaluators with a `views` parameter attach it.
inline void check_views(const Params& p, const ValidationContext& c, ValidationReport& r) {
  if (c.routed_views <= 0) return;
  for (const std::int64_t v : p.integers("views"))
    if (v >= c.routed_views) {
      r.error("views", "view " + std::to_string(v) + " has no route: gate '" + c.gate +
                           "' routes views 0 to " + std::to_string(c.routed_views - 1));
      return;
    }
}

// Whether grid[chosen] is the smallest or the largest value of a grid of two or more values:
// the best setting may lie outside the grid.
inline bool at_grid_edge(const std::vector<double>& grid, std::int64_t chosen) {
  if (grid.size() < 2 || chosen < 0 || chosen >= static_cast<std::int64_t>(grid.size()))
    return false;
  const double v = grid[static_cast<std::size_t>(chosen)];
  bool below = false, above = false;
  for (double g : grid) below = below || g < v, above = above || g > v;
  return !below || !above;
}

// ---- backbone forward ------------------------------------------------------------------------

// The backbone on view `view` of a batch already on the backbone's device, in evaluation mode
// (no gate noise), without gradients when `grad` is false.
BackboneOutput eval_forward(Backbone& backbone, const Batch& batch, std::int64_t view = 0,
                            bool grad = false);

// ---- fine-tuning ----------------------------------------------------------------------------

// A classifier fine-tuned end to end: a trainable copy of the model (EvalContext::trainable_copy),
// optionally a loss's fine-tuning head (Loss::finetune_*) on the CLS feature, and a new linear
// layer with zero weights and bias (every class starts equally likely).
struct FinetuneModel {
  TrainableCopy model;
  Loss* head = nullptr;  // one of model.losses, or null: the classifier reads the CLS feature
  torch::nn::Linear classifier{nullptr};

  // use_head: start from the first loss with a fine-tuning head, when one has.
  FinetuneModel(TrainableCopy copy, std::int64_t classes, bool use_head, c10::Device device);
  at::Tensor logits(const at::Tensor& cls);
  void train(bool on);
  std::vector<at::Tensor> parameters();  // trainable backbone, head and classifier parameters
};

struct FinetuneOptions {
  double lr = 0.01;  // peak; a half cosine to 0 over the steps
  bool sgd = true;   // SGD with momentum, else AdamW
  double momentum = 0.9, weight_decay = 0.0;
  std::int64_t steps = 100;  // optimiser steps; the shuffled set is passed over as often as needed
  // > 0: the budget is this many passes over the training set instead (steps = epochs x the
  // loader's batches per epoch), the cosine spanning all of them.
  std::int64_t epochs = 0;
  ViewRecipe recipe;     // training views (e.g. the "train" preset: crop + flip)
  LoaderOptions loader;  // batch size, workers, seed of the order and the augmentations
  // The view index every forward pass claims (RoutingContext::view): with a gate that routes by
  // view (the sep-ViT's fixed gate), the expert path trained.
  std::int64_t view = 0;
  // true: the gates route as in training (RoutingContext::training: noisy gates draw noise);
  // false: as in evaluation, so that the path trained is the one evaluated. The modules train
  // either way (stochastic depth, batch norm of a head).
  bool route_as_training = true;
};

// Cross-entropy training of the whole model. A batch of one image is skipped (batch norm needs
// two).
void finetune(FinetuneModel& model, std::shared_ptr<const Dataset> train,
              const FinetuneOptions& options, c10::Device device);

// Top-1 and top-5 accuracy (percent) of a fine-tuned model on eval-recipe views of a data set,
// every forward pass claiming view `view` (eval_forward_as).
std::pair<double, double> finetuned_accuracy(EvalContext& context, FinetuneModel& model,
                                             std::shared_ptr<const Dataset> data,
                                             std::int64_t view = 0);

// The backbone on the batch's first view in evaluation mode, every image claiming view `view`
// (RoutingContext::view): with a gate that routes by view (the sep-ViT's fixed gate), the path
// of expert `view`. Without gradients unless `grad`.
BackboneOutput eval_forward_as(Backbone& backbone, const Batch& batch, std::int64_t view,
                               bool grad = false);

// How many rows of logits [B, C] have their label [B] among the k largest (k clipped to C).
std::int64_t topk_correct(const at::Tensor& logits, const at::Tensor& labels, std::int64_t k);

// `count` item indices spread evenly over [0, size): i * size / count, ascending: a
// deterministic sample that is fair to data sets stored class by class.
std::vector<std::int64_t> spread_items(std::int64_t size, std::int64_t count);

}  // namespace wb
