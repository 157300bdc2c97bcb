// The view pipeline and the named recipes (see view_pipeline.h, views.h).
#include "data/view_pipeline.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "data/rng.h"

namespace wb {

ViewRecipe view_preset(const std::string& name) {
  ViewRecipe r;  // the defaults are MoCo v3's first view
  if (name == "moco1") return r;
  if (name == "moco2") {
    r.blur_p = 0.1;
    r.solarize_p = 0.2;
    return r;
  }
  if (name == "train" || name == "eval" || name == "color_only" || name == "mae") {
    r.random_crop = name == "train" || name == "mae";
    r.flip_p = name == "train" || name == "mae" ? 0.5 : 0.0;
    if (name == "mae") r.scale_min = 0.2;  // MAE pre-training: RandomResizedCrop(0.2, 1) + flip
    if (name == "color_only") return r;    // moco1's jitter, grayscale and blur; positions kept
    r.jitter_p = r.grayscale_p = r.blur_p = r.solarize_p = 0.0;
    return r;
  }
  throw std::invalid_argument("unknown view recipe '" + name +
                              "' (valid: moco1, moco2, train, eval, color_only, mae)");
}

}  // namespace wb

namespace wb::data {

namespace {

void require(bool ok, const char* field, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string("view recipe: ") + field + " " + what);
}

void check_probability(double p, const char* field) {
  require(p >= 0.0 && p <= 1.0, field, "must be in [0, 1], got " + std::to_string(p));
}

// torchvision's ColorJitter: factor uniform in [max(0, 1 - s), 1 + s].
double jitter_factor(std::mt19937_64& rng, double strength) {
  return uniform(rng, std::max(0.0, 1.0 - strength), 1.0 + strength);
}

}  // namespace

ViewRecipe resolve_recipe(ViewRecipe r, const Dataset& data) {
  if (r.size == 0) r.size = data.image_size();
  if (r.mean.empty()) r.mean = data.pixel_mean();
  if (r.std.empty()) r.std = data.pixel_std();
  require(r.size > 0, "size", "must be > 0");
  require(r.scale_min > 0 && r.scale_min <= r.scale_max && r.scale_max <= 1.0, "scale_min/max",
          "must satisfy 0 < scale_min <= scale_max <= 1");
  require(r.ratio_min > 0 && r.ratio_min <= r.ratio_max, "ratio_min/max",
          "must satisfy 0 < ratio_min <= ratio_max");
  require(r.center_crop > 0 && r.center_crop <= 1.0, "center_crop", "must be in (0, 1]");
  check_probability(r.flip_p, "flip_p");
  check_probability(r.jitter_p, "jitter_p");
  check_probability(r.grayscale_p, "grayscale_p");
  check_probability(r.blur_p, "blur_p");
  check_probability(r.solarize_p, "solarize_p");
  require(r.brightness >= 0 && r.contrast >= 0 && r.saturation >= 0,
          "brightness/contrast/saturation", "must be >= 0");
  require(r.hue >= 0 && r.hue <= 0.5, "hue", "must be in [0, 0.5]");
  require(r.blur_sigma_min > 0 && r.blur_sigma_min <= r.blur_sigma_max, "blur_sigma_min/max",
          "must satisfy 0 < blur_sigma_min <= blur_sigma_max");
  const auto c = static_cast<std::size_t>(data.channels());
  require(r.mean.size() == c || r.mean.size() == 1, "mean",
          "needs 1 or " + std::to_string(c) + " values");
  require(r.std.size() == r.mean.size(), "std", "needs as many values as mean");
  for (double s : r.std) require(s > 0, "std", "values must be > 0");
  return r;
}

PixelCrop random_resized_crop(std::int64_t height, std::int64_t width, const ViewRecipe& r,
                              std::mt19937_64& rng) {
  const double area = static_cast<double>(height * width);
  const double log_lo = std::log(r.ratio_min), log_hi = std::log(r.ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * uniform(rng, r.scale_min, r.scale_max);
    const double ratio = std::exp(uniform(rng, log_lo, log_hi));
    // nearbyint rounds halves to even, like Python's round().
    const auto w = static_cast<std::int64_t>(std::nearbyint(std::sqrt(target * ratio)));
    const auto h = static_cast<std::int64_t>(std::nearbyint(std::sqrt(target / ratio)));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const auto y = static_cast<std::int64_t>(uniform_index(rng, height - h + 1));
      const auto x = static_cast<std::int64_t>(uniform_index(rng, width - w + 1));
      return {x, y, w, h};
    }
  }
  // Fallback: the whole image, cut to the nearest allowed aspect ratio, centred.
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  std::int64_t w = width, h = height;
  if (in_ratio < r.ratio_min)
    h = static_cast<std::int64_t>(std::nearbyint(static_cast<double>(w) / r.ratio_min));
  else if (in_ratio > r.ratio_max)
    w = static_cast<std::int64_t>(std::nearbyint(static_cast<double>(h) * r.ratio_max));
  return {(width - w) / 2, (height - h) / 2, w, h};
}

PixelCrop center_crop(std::int64_t height, std::int64_t width, double fraction) {
  const auto side = std::max<std::int64_t>(
      1, static_cast<std::int64_t>(
             std::nearbyint(fraction * static_cast<double>(std::min(height, width)))));
  const auto x = static_cast<std::int64_t>(std::nearbyint((width - side) / 2.0));
  const auto y = static_cast<std::int64_t>(std::nearbyint((height - side) / 2.0));
  return {x, y, side, side};
}

ViewBox make_view(const Image& image, const ViewRecipe& r, std::mt19937_64& rng, float* out) {
  const std::int64_t H = image.height, W = image.width, C = image.channels, S = r.size;
  const std::int64_t hw = S * S;

  const PixelCrop crop =
      r.random_crop ? random_resized_crop(H, W, r, rng) : center_crop(H, W, r.center_crop);
  ViewBox box;
  box.x = static_cast<float>(static_cast<double>(crop.x) / static_cast<double>(W));
  box.y = static_cast<float>(static_cast<double>(crop.y) / static_cast<double>(H));
  box.w = static_cast<float>(static_cast<double>(crop.w) / static_cast<double>(W));
  box.h = static_cast<float>(static_cast<double>(crop.h) / static_cast<double>(H));
  box.flip = bernoulli(rng, r.flip_p);
  resample(image, crop, S, S, box.flip, out);

  if (bernoulli(rng, r.jitter_p)) {
    // torchvision: a random order of the four operations, then their factors.
    int order[4] = {0, 1, 2, 3};
    for (int i = 3; i > 0; --i) std::swap(order[i], order[uniform_index(rng, i + 1)]);
    const double b = jitter_factor(rng, r.brightness), c = jitter_factor(rng, r.contrast);
    const double s = jitter_factor(rng, r.saturation), h = uniform(rng, -r.hue, r.hue);
    for (int op : order) {
      // A zero strength disables its operation, as in torchvision (the hue round trip
      // through HSV would otherwise move values by rounding).
      if (op == 0 && r.brightness > 0) adjust_brightness(out, C, hw, b);
      if (op == 1 && r.contrast > 0) adjust_contrast(out, C, hw, c);
      if (op == 2 && r.saturation > 0) adjust_saturation(out, C, hw, s);
      if (op == 3 && r.hue > 0) adjust_hue(out, C, hw, h);
    }
  }
  if (bernoulli(rng, r.grayscale_p)) to_grayscale(out, C, hw);
  if (bernoulli(rng, r.blur_p)) {
    // Sigma range is given for 224-pixel images: scale it with the view.
    const double sigma =
        uniform(rng, r.blur_sigma_min, r.blur_sigma_max) * static_cast<double>(S) / 224.0;
    gaussian_blur(out, C, S, S, sigma);
  }
  if (bernoulli(rng, r.solarize_p)) solarize(out, C * hw, r.solarize_threshold);
  normalize(out, C, hw, r.mean, r.std);
  return box;
}

std::uint64_t view_seed(std::uint64_t seed, std::int64_t epoch, std::int64_t position,
                        std::int64_t view) {
  std::uint64_t s = combine_seed(seed, static_cast<std::uint64_t>(epoch));
  s = combine_seed(s, static_cast<std::uint64_t>(position));
  return combine_seed(s, static_cast<std::uint64_t>(view));
}

}  // namespace wb::data
