#include "train/data_access.h"

#include <functional>
#include <map>
#include <stdexcept>

#include "data/datasets.h"

namespace wb {

std::shared_ptr<const Dataset> open_data(const Params& data, Split split) {
  return open_dataset(data, split);
}

namespace {

// How each [views.viewN] key lands in a ViewRecipe.
using Setter = std::function<void(ViewRecipe&, const Params&, const std::string&)>;

const std::map<std::string, Setter>& recipe_setters() {
  auto real = [](double ViewRecipe::*field) {
    return Setter([field](ViewRecipe& r, const Params& p, const std::string& k) { r.*field = p.real(k); });
  };
  static const std::map<std::string, Setter> setters = {
      {"size", [](ViewRecipe& r, const Params& p, const std::string& k) { r.size = p.integer(k); }},
      {"random_crop",
       [](ViewRecipe& r, const Params& p, const std::string& k) { r.random_crop = p.boolean(k); }},
      {"scale_min", real(&ViewRecipe::scale_min)},
      {"scale_max", real(&ViewRecipe::scale_max)},
      {"ratio_min", real(&ViewRecipe::ratio_min)},
      {"ratio_max", real(&ViewRecipe::ratio_max)},
      {"center_crop", real(&ViewRecipe::center_crop)},
      {"flip_p", real(&ViewRecipe::flip_p)},
      {"jitter_p", real(&ViewRecipe::jitter_p)},
      {"brightness", real(&ViewRecipe::brightness)},
      {"contrast", real(&ViewRecipe::contrast)},
      {"saturation", real(&ViewRecipe::saturation)},
      {"hue", real(&ViewRecipe::hue)},
      {"grayscale_p", real(&ViewRecipe::grayscale_p)},
      {"blur_p", real(&ViewRecipe::blur_p)},
      {"blur_sigma_min", real(&ViewRecipe::blur_sigma_min)},
      {"blur_sigma_max", real(&ViewRecipe::blur_sigma_max)},
      {"solarize_p", real(&ViewRecipe::solarize_p)},
      {"solarize_threshold", real(&ViewRecipe::solarize_threshold)},
      {"mean", [](ViewRecipe& r, const Params& p, const std::string& k) { r.mean = p.reals(k); }},
      {"std", [](ViewRecipe& r, const Params& p, const std::string& k) { r.std = p.reals(k); }},
  };
  return setters;
}

}  // namespace

ViewRecipe make_recipe(const std::string& preset, const Params& overrides, const Params& data,
                       std::int64_t size) {
  (void)data;  // normalisation: empty mean/std means the data set's own statistics (loader)
  ViewRecipe recipe = view_preset(preset);
  recipe.size = size;
  for (const auto& [key, value] : overrides.values()) {
    auto it = recipe_setters().find(key);
    if (it == recipe_setters().end())
      throw std::logic_error("view recipe has no field '" + key + "'");
    it->second(recipe, overrides, key);
  }
  return recipe;
}

}  // namespace wb
