// Parameter schemas of the data-related configuration tables, for the configuration
// validator (config/), and the function that applies view-recipe overrides.
#pragma once

#include <vector>

#include "workbench/params.h"
#include "workbench/views.h"

namespace wb {

// [data] and [datasets.<name>]: dataset, path, image_size, val_fraction, label_fraction,
// shots, classes, subset_seed, train_limit, test_limit (docs/design.md), and relabel.
std::vector<ParamSpec> data_schema();

// [views.view1] / [views.view2]: every ViewRecipe field, all optional (only the keys a user
// sets override the preset).
std::vector<ParamSpec> view_override_schema();

// The recipe with the overrides' keys applied; an unknown key is an std::invalid_argument
// naming the table (the Params' owner) and the valid keys.
ViewRecipe apply_view_overrides(ViewRecipe recipe, const Params& overrides);

}  // namespace wb
