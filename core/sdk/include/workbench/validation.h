// Checks a plugin makes on its resolved parameters before anything runs: `workbench run` and
// `--dry-run` call them for every point (and every [profile.*]), so that `k = 17` with 16
// experts is refused with the file, line and column of `k` before any point trains, not when
// the point's model is built. A plugin that registers no check has none (docs/plugins.md,
// "Checks before anything runs").
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "workbench/format.h"
#include "workbench/params.h"

namespace wb {

// What a loss needs from the trainer (Loss::requirements(), workbench/loss.h). The trainer takes
// the union over all losses (merge_requirements); a loss's check may declare the same before
// anything runs (ValidationReport::needs).
struct LossRequirements {
  int views = 1;                        // augmented views per image (MoCo: 2)
  bool labels = false;                  // needs class labels (supervised)
  bool momentum_encoder = false;        // needs the EMA encoder's outputs for every view
                                        // (its momentum m0 is train.momentum, the trainer's)
  bool freeze_patch_embedding = false;  // random patch projection
  // MAE masking: the fraction of patches hidden from the online and momentum encoders, drawn
  // per image and view every step (docs/methods.md §8); 0 = no mask. Losses that ask for
  // different non-zero ratios cannot be combined.
  double mask_ratio = 0;
  bool expert_outputs = false;  // Routing::expert_outputs of the online forward (costs
                                // every expert on every token of each MoE layer)
};

// The requirements of two sets of losses together: what the trainer serves (the larger view
// count, every flag either asks for, the one mask ratio). Throws std::invalid_argument when they
// cannot be combined: two different non-zero mask ratios, since a step draws one mask per view.
// The trainer merges the built losses' requirements with it, the checks before anything runs
// their declared ones, so the two refuse the same runs.
inline LossRequirements merge_requirements(LossRequirements a, const LossRequirements& b) {
  if (a.mask_ratio > 0 && b.mask_ratio > 0 && a.mask_ratio != b.mask_ratio)
    throw std::invalid_argument(
        "two losses ask for different mask ratios (" + format_number(a.mask_ratio, 6) + " and " +
        format_number(b.mask_ratio, 6) + "): a step draws one mask per view");
  a.views = std::max(a.views, b.views);
  a.labels = a.labels || b.labels;
  a.momentum_encoder = a.momentum_encoder || b.momentum_encoder;
  a.freeze_patch_embedding = a.freeze_patch_embedding || b.freeze_patch_embedding;
  a.mask_ratio = std::max(a.mask_ratio, b.mask_ratio);
  a.expert_outputs = a.expert_outputs || b.expert_outputs;
  return a;
}

// What a check may know about the point besides its own parameters. Every size is 0 where it
// is not known before the point runs (e.g. a data set whose files are not there); a check
// skips what it cannot decide, and the plugin's constructor still refuses it at run time.
struct ValidationContext {
  // The images the backbone reads: data.image_size, or the data set's native size when 0;
  // data.channels, or the native channels; the class count the data set declares.
  std::int64_t image_size = 0;
  std::int64_t channels = 0;
  std::int64_t classes = 0;
  // The model the backbone will build, as its own check declared it (ValidationReport::shape);
  // zero in the backbone's own check. feature_dim 0: the backbone declared nothing, so the
  // other three are unknown too (not "dense").
  std::int64_t feature_dim = 0;
  std::int64_t experts = 0;     // experts per MoE layer; 0 = dense
  std::int64_t patch_grid = 0;  // patches per side
  std::int64_t moe_layers = 0;
  // The views per image the run's losses ask for, as their checks declared them
  // (ValidationReport::needs, merged: the largest): a lower bound, since a loss without a check
  // declares nothing; 0 in the losses' own checks. The gate's and the evaluators' checks see it.
  std::int64_t views = 0;
  // The view indices the gate can route, 0 .. routed_views - 1, as its check declared them
  // (ValidationReport::routed_views; the fixed gate: one per expert); 0 = any, or unknown. The
  // evaluators' checks see it (their `views` parameter).
  std::int64_t routed_views = 0;
  // The run's other resolved sections (core schemas, docs/design.md): never null in a check.
  std::string backbone;  // the backbone plugin's name
  std::string gate;      // the gate plugin's name; "" when the run has no [gate]
  const Params* data = nullptr;
  const Params* train = nullptr;
};

// The model a backbone's check declares, passed on to the checks of the losses, the gate and the
// evaluators.
struct ModelShape {
  std::int64_t feature_dim = 0, experts = 0, patch_grid = 0, moe_layers = 0;
};

// One problem: `key` is a parameter of the plugin's own table ("k", "heads"; "" for the table
// as a whole). The host turns it into "gate.k" and the file:line:column where its value was
// written (the experiment file, a [[point]], a [profile.*] or --set).
struct ValidationError {
  std::string key;
  std::string message;
};

struct ValidationReport {
  std::vector<ValidationError> errors;
  ModelShape shape;  // backbones fill it in; ignored for other kinds
  // Losses: what Loss::requirements() will return for these parameters (the same function
  // should give both). The host merges them in the order of `losses` and refuses two different
  // mask ratios at the second one's `mask_ratio`; their views reach the gate's check
  // (ValidationContext::views). Left at the default: 1 view, nothing else.
  LossRequirements needs;
  // Gates: the view indices the routing can take (ValidationContext::routed_views); 0 = any.
  std::int64_t routed_views = 0;

  void error(std::string key, std::string message) {
    errors.push_back({std::move(key), std::move(message)});
  }
  bool ok() const { return errors.empty(); }
};

using Validator =
    std::function<void(const Params&, const ValidationContext&, ValidationReport& report)>;

}  // namespace wb
