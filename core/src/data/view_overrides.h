// Applies the [views.view1] / [views.view2] overrides of a run configuration to a preset. The
// keys are validated by the configuration schema (config/schema.cpp); this maps them to fields.
#pragma once

#include <vector>

#include "workbench/params.h"
#include "workbench/views.h"

namespace wb {

// The recipe with the overrides' keys applied; an unknown key is an std::invalid_argument
// naming the table (the Params' owner) and the valid keys.
ViewRecipe apply_view_overrides(ViewRecipe recipe, const Params& overrides);

}  // namespace wb
