// What the trainer and the evaluation context need from the data layer, in one place.
#pragma once

#include <memory>
#include <string>

#include "workbench/data.h"
#include "workbench/params.h"
#include "workbench/views.h"

namespace wb {

// Opens a split of the data set described by a [data] / [datasets.<name>] section.
std::shared_ptr<const Dataset> open_data(const Params& data, Split split);

// A named preset with the user's overrides (only the keys set in `overrides`), the data set's
// normalisation, and the model's input size.
ViewRecipe make_recipe(const std::string& preset, const Params& overrides,
                       const Params& data, std::int64_t size);

}  // namespace wb
