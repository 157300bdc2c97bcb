// Checks a plugin makes on its resolved parameters before anything runs: `workbench run` and
// `--dry-run` call them for every point (and every [profile.*]), so that `k = 17` with 16
// experts is refused with the file, line and column of `k` before any point trains, not when
// the point's model is built. A plugin that registers no check has none (docs/plugins.md,
// "Checks before anything runs").
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "workbench/params.h"

namespace wb {

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
  // The run's other resolved sections (core schemas, docs/design.md): never null in a check.
  std::string backbone;  // the backbone plugin's name
  std::string gate;      // the gate plugin's name; "" when the run has no [gate]
  const Params* data = nullptr;
  const Params* train = nullptr;
};

// The model a backbone's check declares, passed on to the checks of the gate, losses and
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

  void error(std::string key, std::string message) {
    errors.push_back({std::move(key), std::move(message)});
  }
  bool ok() const { return errors.empty(); }
};

using Validator =
    std::function<void(const Params&, const ValidationContext&, ValidationReport& report)>;

}  // namespace wb
