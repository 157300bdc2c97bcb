// One augmented view of one image (docs/methods.md §4): crop, resize, flip, colour, blur,
// solarize, normalise, remembering the crop box and the flip. Used by the loader's workers
// and by tools that draw views.
#pragma once

#include <cstdint>
#include <random>

#include "data/image_ops.h"
#include "workbench/views.h"

namespace wb::data {

struct ViewBox {
  float x = 0, y = 0, w = 1, h = 1;  // crop in normalised original-image coordinates
  bool flip = false;
};

// Fills size, mean and std from the data set where the recipe leaves them unset, and checks
// every field (std::invalid_argument naming the field).
ViewRecipe resolve_recipe(ViewRecipe recipe, const Dataset& data);

// torchvision's RandomResizedCrop.get_params: 10 tries at a random area and log-uniform
// aspect ratio, then the central crop clamped to the ratio range.
PixelCrop random_resized_crop(std::int64_t height, std::int64_t width, const ViewRecipe& recipe,
                              std::mt19937_64& rng);
// The central square covering `fraction` of the shorter side (eval: resize + centre crop).
PixelCrop center_crop(std::int64_t height, std::int64_t width, double fraction);

// Writes channels x size x size floats (normalised) to `out`; `recipe` must be resolved.
ViewBox make_view(const Image& image, const ViewRecipe& recipe, std::mt19937_64& rng, float* out);

// The seed of one view: depends only on these four values, so batches do not depend on
// which worker thread made them.
std::uint64_t view_seed(std::uint64_t seed, std::int64_t epoch, std::int64_t position,
                        std::int64_t view);

}  // namespace wb::data
