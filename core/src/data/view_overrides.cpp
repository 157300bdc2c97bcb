// View-recipe overrides (see view_overrides.h).
#include "data/view_overrides.h"

#include <functional>
#include <stdexcept>

namespace wb {

namespace {

struct Field {
  ParamSpec spec;
  std::function<void(ViewRecipe&, const Params&, const std::string&)> set;
};

Field real_field(const char* name, double ViewRecipe::*member, const char* doc, double lo,
                 double hi) {
  return {ParamSpec::optional(name, ParamType::Float, doc).range(lo, hi),
          [member](ViewRecipe& r, const Params& p, const std::string& key) {
            r.*member = p.real(key);
          }};
}

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      {ParamSpec::optional("size", ParamType::Int, "output side in pixels (0 = the image size)")
           .at_least(0),
       [](ViewRecipe& r, const Params& p, const std::string& k) { r.size = p.integer(k); }},
      {ParamSpec::optional("random_crop", ParamType::Bool,
                           "RandomResizedCrop (off: resize + centre crop)"),
       [](ViewRecipe& r, const Params& p, const std::string& k) { r.random_crop = p.boolean(k); }},
      real_field("scale_min", &ViewRecipe::scale_min, "smallest crop area fraction", 0, 1),
      real_field("scale_max", &ViewRecipe::scale_max, "largest crop area fraction", 0, 1),
      real_field("ratio_min", &ViewRecipe::ratio_min, "smallest crop aspect ratio", 0, 100),
      real_field("ratio_max", &ViewRecipe::ratio_max, "largest crop aspect ratio", 0, 100),
      real_field("center_crop", &ViewRecipe::center_crop,
                 "without random_crop: fraction of the image the centre crop keeps", 0, 1),
      real_field("flip_p", &ViewRecipe::flip_p, "horizontal flip probability", 0, 1),
      real_field("jitter_p", &ViewRecipe::jitter_p, "colour jitter probability", 0, 1),
      real_field("brightness", &ViewRecipe::brightness, "jitter strength", 0, 10),
      real_field("contrast", &ViewRecipe::contrast, "jitter strength", 0, 10),
      real_field("saturation", &ViewRecipe::saturation, "jitter strength", 0, 10),
      real_field("hue", &ViewRecipe::hue, "jitter strength (fraction of a turn)", 0, 0.5),
      real_field("grayscale_p", &ViewRecipe::grayscale_p, "grayscale probability", 0, 1),
      real_field("blur_p", &ViewRecipe::blur_p, "Gaussian blur probability", 0, 1),
      real_field("blur_sigma_min", &ViewRecipe::blur_sigma_min, "blur sigma at 224 px", 0, 100),
      real_field("blur_sigma_max", &ViewRecipe::blur_sigma_max, "blur sigma at 224 px", 0, 100),
      real_field("solarize_p", &ViewRecipe::solarize_p, "solarize probability", 0, 1),
      real_field("solarize_threshold", &ViewRecipe::solarize_threshold,
                 "solarize values at or above this", 0, 1),
      {ParamSpec::optional("mean", ParamType::FloatList,
                           "per-channel mean (empty = the data set's)"),
       [](ViewRecipe& r, const Params& p, const std::string& k) { r.mean = p.reals(k); }},
      {ParamSpec::optional("std", ParamType::FloatList, "per-channel std (empty = the data set's)"),
       [](ViewRecipe& r, const Params& p, const std::string& k) { r.std = p.reals(k); }},
  };
  return table;
}

}  // namespace

ViewRecipe apply_view_overrides(ViewRecipe recipe, const Params& overrides) {
  for (const auto& [key, value] : overrides.values()) {
    const Field* field = nullptr;
    for (const auto& f : fields())
      if (f.spec.name == key) field = &f;
    if (!field) {
      std::string valid;
      for (const auto& f : fields()) valid += (valid.empty() ? "" : ", ") + f.spec.name;
      throw std::invalid_argument("unknown view recipe key '" + key + "'" +
                                  (overrides.owner().empty() ? "" : " in " + overrides.owner()) +
                                  " (valid: " + valid + ")");
    }
    field->set(recipe, overrides, key);
  }
  return recipe;
}

}  // namespace wb
