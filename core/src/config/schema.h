// Schemas of the core sections of a run configuration (design.md, "Run configuration"). They
// are declared with wb::ParamSpec like plugin parameters, so that validation, defaults and
// `workbench plugins` treat core keys and plugin keys alike. The plugin-valued sections
// (backbone, required; gate, optional; losses, at least one; evaluators) are validated against
// the plugins' own schemas (config/validate.h).
#pragma once

#include <string>
#include <vector>

#include "workbench/params.h"

namespace wb {

const std::vector<ParamSpec>& run_schema();    // top level: seed, device, threads, workers
const std::vector<ParamSpec>& data_schema();   // [data] and every [datasets.<name>]
const std::vector<ParamSpec>& views_schema();  // [views]: recipe
// [views.view1] / [views.view2]: the fields of ViewRecipe (views.h). No defaults: only the
// keys the user sets are kept, and they override the recipe's preset.
const std::vector<ParamSpec>& view_override_schema();
const std::vector<ParamSpec>& train_schema();  // [train]
const std::vector<ParamSpec>& init_schema();   // [init]: initial weights (weights/init.h)

struct CoreSection {
  std::string name;  // "" (top level), "data", "datasets.<name>", "views", "views.view1", ...
  std::string doc;
  const std::vector<ParamSpec>* params;
};
// Every core section in the order a configuration file shows them, for `workbench plugins`.
std::vector<CoreSection> core_sections();

}  // namespace wb
