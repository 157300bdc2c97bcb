// What the trainer and the evaluation context need from the data layer, in one place.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config/run_config.h"

#include "workbench/data.h"
#include "workbench/params.h"
#include "workbench/views.h"

namespace wb {

// Opens a split, converted to the channel count of the section's `channels` key when set.
std::shared_ptr<const Dataset> open_data(const DataSettings& data, Split split);

// A named preset with the user's overrides (only the keys set in `overrides`) at the model's
// input size; empty mean/std normalise with the data set's own statistics.
ViewRecipe make_recipe(const std::string& preset, const Params& overrides, std::int64_t size);

// The training views of a run: [views] recipe ("auto" = moco for two views, train for one)
// with view1 / view2 overrides, at the given input size.
std::vector<ViewRecipe> train_recipes(const RunConfig& config, int views, std::int64_t size);

}  // namespace wb
