// View pipeline: resampling, each colour operation against hand-computed pixels, crops and
// flips with their boxes, presets.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "config/schema.h"
#include "data/image_ops.h"
#include "data/view_overrides.h"
#include "data/view_pipeline.h"
#include "test_data_helpers.h"

using namespace wb::data;

namespace {

wb::Image gray_image(std::int64_t h, std::int64_t w, std::vector<std::uint8_t> px) {
  wb::Image img;
  img.channels = 1;
  img.height = h;
  img.width = w;
  img.pixels = std::move(px);
  return img;
}

// A recipe with every random step off: the view is the (centre-cropped) image resized.
wb::ViewRecipe plain(std::int64_t size, std::int64_t channels = 1) {
  wb::ViewRecipe r = wb::view_preset("eval");
  r.size = size;
  r.mean.assign(channels, 0.0);
  r.std.assign(channels, 1.0);
  return r;
}

}  // namespace

TEST_CASE("resample: same size is exact, 2x downscale uses the widened triangle filter") {
  const auto img = gray_image(1, 4, {0, 40, 80, 120});
  std::vector<float> out(4);
  resample(img, {0, 0, 4, 1}, 1, 4, false, out.data());
  for (int i = 0; i < 4; ++i) CHECK(out[i] == doctest::Approx(img.pixels[i] / 255.0).epsilon(1e-6));
  // Output 0 centred at 1.0 with filter radius 2: taps 0, 1, 2 weigh 0.75, 0.75, 0.25.
  resample(img, {0, 0, 4, 1}, 1, 2, false, out.data());
  CHECK(out[0] * 255 == doctest::Approx((0 * 0.75 + 40 * 0.75 + 80 * 0.25) / 1.75).epsilon(1e-5));
  CHECK(out[1] * 255 == doctest::Approx((40 * 0.25 + 80 * 0.75 + 120 * 0.75) / 1.75).epsilon(1e-5));
  // Flip mirrors the output.
  resample(img, {0, 0, 4, 1}, 1, 4, true, out.data());
  for (int i = 0; i < 4; ++i)
    CHECK(out[i] == doctest::Approx(img.pixels[3 - i] / 255.0).epsilon(1e-6));
  // Upscaling 2 -> 4 (half-pixel centres): 0.25 / 0.75 blends inside, edges clamped.
  const auto two = gray_image(1, 2, {0, 100});
  resample(two, {0, 0, 2, 1}, 1, 4, false, out.data());
  CHECK(out[0] * 255 == doctest::Approx(0).epsilon(1e-5));
  CHECK(out[1] * 255 == doctest::Approx(25).epsilon(1e-5));
  CHECK(out[2] * 255 == doctest::Approx(75).epsilon(1e-5));
  CHECK(out[3] * 255 == doctest::Approx(100).epsilon(1e-5));
  // A constant image stays constant under a strong downscale (area averaging, no ripples).
  const auto flat = gray_image(64, 64, std::vector<std::uint8_t>(64 * 64, 200));
  std::vector<float> small(5 * 5);
  resample(flat, {3, 5, 50, 40}, 5, 5, false, small.data());
  for (float v : small) CHECK(v * 255 == doctest::Approx(200).epsilon(1e-5));
  CHECK_THROWS_WITH_AS(resample(flat, {30, 30, 50, 10}, 5, 5, false, small.data()),
                       doctest::Contains("does not fit"), std::invalid_argument);
}

TEST_CASE("resize_center_square: a shorter side at the size already is the resampler's crop") {
  // 3 channels, 7 x 11 and 11 x 7, pixels that differ everywhere.
  for (const auto& [h, w] : {std::pair<std::int64_t, std::int64_t>{7, 11}, {11, 7}}) {
    CAPTURE(h);
    wb::Image img;
    img.channels = 3;
    img.height = h;
    img.width = w;
    for (std::int64_t i = 0; i < 3 * h * w; ++i)
      img.pixels.push_back(static_cast<std::uint8_t>((i * 37 + i / 5) % 256));
    // The copy taken when the side is kept equals resampling the central square at scale 1.
    const PixelCrop centre{(w - 7) / 2, (h - 7) / 2, 7, 7};
    const wb::Image copied = resize_center_square(img, 7);
    CHECK(copied.height == 7);
    CHECK(copied.width == 7);
    CHECK(copied.pixels == resize_image(img, centre, 7, 7).pixels);
    for (std::int64_t y = 0; y < 7; ++y)
      for (std::int64_t x = 0; x < 7; ++x)
        CHECK(copied.pixels[(y * 7 + x) * 3 + 2] ==
              img.pixels[((centre.y + y) * w + centre.x + x) * 3 + 2]);
  }
}

TEST_CASE("colour operations match hand-computed pixels") {
  SUBCASE("brightness scales and clamps") {
    float p[3] = {0.2f, 0.5f, 0.9f};
    adjust_brightness(p, 1, 3, 1.5);
    CHECK(p[0] == doctest::Approx(0.3));
    CHECK(p[1] == doctest::Approx(0.75));
    CHECK(p[2] == doctest::Approx(1.0));
  }
  SUBCASE("contrast blends with the mean of the grey image") {
    float p[2] = {0.2f, 0.6f};  // mean 0.4
    adjust_contrast(p, 1, 2, 0.5);
    CHECK(p[0] == doctest::Approx(0.3));
    CHECK(p[1] == doctest::Approx(0.5));
    // RGB: the mean is of the luma 0.2989 r + 0.587 g + 0.114 b.
    float rgb[3] = {1.0f, 0.0f, 0.0f};  // one red pixel, luma 0.2989
    adjust_contrast(rgb, 3, 1, 0.0);
    for (float v : rgb) CHECK(v == doctest::Approx(0.2989));
  }
  SUBCASE("grayscale uses torchvision's weights") {
    float rgb[3] = {0.5f, 0.25f, 1.0f};
    to_grayscale(rgb, 3, 1);
    const double l = 0.2989 * 0.5 + 0.587 * 0.25 + 0.114 * 1.0;
    for (float v : rgb) CHECK(v == doctest::Approx(l));
    float g[1] = {0.7f};
    to_grayscale(g, 1, 1);  // one channel: unchanged
    CHECK(g[0] == doctest::Approx(0.7));
  }
  SUBCASE("saturation blends with the grey value; 0 gives grey, 1-channel unchanged") {
    float rgb[3] = {0.8f, 0.4f, 0.2f};
    const double l = 0.2989 * 0.8 + 0.587 * 0.4 + 0.114 * 0.2;
    adjust_saturation(rgb, 3, 1, 0.5);
    CHECK(rgb[0] == doctest::Approx(0.5 * 0.8 + 0.5 * l));
    CHECK(rgb[2] == doctest::Approx(0.5 * 0.2 + 0.5 * l));
    float g[1] = {0.3f};
    adjust_saturation(g, 1, 1, 0.0);
    CHECK(g[0] == doctest::Approx(0.3));
  }
  SUBCASE("hue rotates: red + 1/3 turn is green, + 0.5 is cyan") {
    float rgb[3] = {1.0f, 0.0f, 0.0f};
    adjust_hue(rgb, 3, 1, 1.0 / 3.0);
    CHECK(rgb[0] == doctest::Approx(0.0).epsilon(1e-5));
    CHECK(rgb[1] == doctest::Approx(1.0));
    CHECK(rgb[2] == doctest::Approx(0.0).epsilon(1e-5));
    float c[3] = {0.6f, 0.2f, 0.2f};
    adjust_hue(c, 3, 1, -0.5);
    CHECK(c[0] == doctest::Approx(0.2));
    CHECK(c[1] == doctest::Approx(0.6));
    CHECK(c[2] == doctest::Approx(0.6));
    // Five pixels (four take the vectorised path, one the scalar one): red, dull red, grey,
    // (0.3, 0.7, 0.1) whose hue x 6 is 2 - 1/3, red; all turned by 1/3.
    float p5[15] = {1.0f, 0.6f, 0.5f, 0.3f, 1.0f,   // R
                    0.0f, 0.2f, 0.5f, 0.7f, 0.0f,   // G
                    0.0f, 0.2f, 0.5f, 0.1f, 0.0f};  // B
    adjust_hue(p5, 3, 5, 1.0 / 3.0);
    // Expected: green; (0.2, 0.6, 0.2); grey; hue x 6 = 3 + 2/3 -> (min, max - 0.6 x 2/3, max).
    const float expect[15] = {0.0f, 0.2f, 0.5f, 0.1f, 0.0f, 1.0f, 0.6f, 0.5f,
                              0.3f, 1.0f, 0.0f, 0.2f, 0.5f, 0.7f, 0.0f};
    for (int i = 0; i < 15; ++i) CHECK(p5[i] == doctest::Approx(expect[i]).epsilon(1e-5));
  }
  SUBCASE("solarize inverts values at or above the threshold") {
    float p[3] = {0.2f, 0.5f, 0.9f};
    solarize(p, 3, 0.5);
    CHECK(p[0] == doctest::Approx(0.2));
    CHECK(p[1] == doctest::Approx(0.5));
    CHECK(p[2] == doctest::Approx(0.1));
  }
  SUBCASE("normalisation per channel") {
    float p[4] = {0.2860f, 0.6390f, 0.5f, 0.5f};  // 2 channels of 2 pixels
    normalize(p, 2, 2, {0.2860, 0.5}, {0.3530, 0.25});
    CHECK(p[0] == doctest::Approx(0.0));
    CHECK(p[1] == doctest::Approx(1.0));
    CHECK(p[2] == doctest::Approx(0.0));
    CHECK_THROWS_AS(normalize(p, 2, 2, {0.1, 0.2, 0.3}, {1, 1, 1}), std::invalid_argument);
  }
  SUBCASE("gaussian blur: kernel radius ceil(3 sigma), normalised, constant images unchanged") {
    const auto k = gaussian_kernel(1.2);
    CHECK(k.size() == 2 * 4 + 1);
    double sum = 0;
    for (float v : k) sum += v;
    CHECK(sum == doctest::Approx(1.0));
    CHECK(k[4] / k[5] == doctest::Approx(std::exp(0.5 / 1.44)));
    std::vector<float> flat(3 * 5 * 6, 0.25f);
    gaussian_blur(flat.data(), 3, 5, 6, 2.0);
    for (float v : flat) CHECK(v == doctest::Approx(0.25));
    // A single bright pixel spreads as the separable kernel: centre k[r]^2.
    std::vector<float> dot(9 * 9, 0.0f);
    dot[4 * 9 + 4] = 1.0f;
    gaussian_blur(dot.data(), 1, 9, 9, 1.0);
    const auto k1 = gaussian_kernel(1.0);
    CHECK(dot[4 * 9 + 4] == doctest::Approx(k1[3] * k1[3]));
    CHECK(dot[4 * 9 + 5] == doctest::Approx(k1[3] * k1[4]));
  }
}

TEST_CASE("a known centre crop and flip give the known box and mirrored pixels") {
  std::vector<std::uint8_t> px(8 * 8);
  for (int i = 0; i < 64; ++i) px[i] = static_cast<std::uint8_t>(i * 3);
  const auto img = gray_image(8, 8, px);
  wb::ViewRecipe r = plain(4);
  r.center_crop = 0.5;  // central 4x4 at (2, 2)
  r.flip_p = 1.0;
  std::mt19937_64 rng(1);
  std::vector<float> out(16);
  const ViewBox box = make_view(img, r, rng, out.data());
  CHECK(box.x == doctest::Approx(0.25));
  CHECK(box.y == doctest::Approx(0.25));
  CHECK(box.w == doctest::Approx(0.5));
  CHECK(box.h == doctest::Approx(0.5));
  CHECK(box.flip);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x)
      CHECK(out[y * 4 + x] * 255 == doctest::Approx(px[(y + 2) * 8 + (2 + 3 - x)]).epsilon(1e-5));
}

TEST_CASE("random resized crop: fixed scale and ratio give the known size, fallback is centred") {
  wb::ViewRecipe r;
  r.scale_min = r.scale_max = 0.25;
  r.ratio_min = r.ratio_max = 1.0;
  std::mt19937_64 rng(7);
  for (int t = 0; t < 20; ++t) {
    const PixelCrop c = random_resized_crop(100, 100, r, rng);
    CHECK(c.w == 50);
    CHECK(c.h == 50);
    CHECK(c.x >= 0);
    CHECK(c.x <= 50);
    CHECK(c.y <= 50);
  }
  // Aspect 2 at full area never fits a square image: the fallback is the full width, half
  // the height (ratio clamped to 2), centred.
  r.scale_min = r.scale_max = 1.0;
  r.ratio_min = r.ratio_max = 2.0;
  const PixelCrop f = random_resized_crop(100, 100, r, rng);
  CHECK(f.x == 0);
  CHECK(f.w == 100);
  CHECK(f.h == 50);
  CHECK(f.y == 25);
  // The box of a random crop is the crop in normalised coordinates.
  wb::ViewRecipe v = plain(10);
  v.random_crop = true;
  v.scale_min = v.scale_max = 0.25;
  v.ratio_min = v.ratio_max = 1.0;
  std::mt19937_64 a(3), b(3);
  const PixelCrop expect = random_resized_crop(40, 40, v, a);
  std::vector<std::uint8_t> px(40 * 40, 9);
  std::vector<float> out(100);
  const ViewBox box = make_view(gray_image(40, 40, px), v, b, out.data());
  CHECK(box.x == doctest::Approx(expect.x / 40.0));
  CHECK(box.y == doctest::Approx(expect.y / 40.0));
  CHECK(box.w == doctest::Approx(0.5));
  CHECK(box.h == doctest::Approx(0.5));
}

TEST_CASE("views with crop, flip and colour disabled are bit-identical whatever the seed") {
  wbtest::SyntheticDataset data({0}, 3, 12);
  const wb::ViewRecipe r = resolve_recipe(wb::view_preset("eval"), data);
  const wb::Image img = data.image(0);
  std::vector<float> a(3 * 12 * 12), b(a.size());
  std::mt19937_64 ra(1), rb(999);
  const ViewBox ba = make_view(img, r, ra, a.data());
  const ViewBox bb = make_view(img, r, rb, b.data());
  CHECK(a == b);
  CHECK(ba.w == 1.0f);
  CHECK(bb.x == 0.0f);
  CHECK_FALSE(ba.flip);
  // And they equal the normalised image (same size: no resampling error beyond rounding).
  CHECK(a[0] == doctest::Approx((img.pixels[0] / 255.0 - 0.5) / 0.5).epsilon(1e-5));
}

TEST_CASE("view presets and recipe validation") {
  const auto m1 = wb::view_preset("moco1"), m2 = wb::view_preset("moco2");
  CHECK(m1.blur_p == 1.0);
  CHECK(m1.solarize_p == 0.0);
  CHECK(m2.blur_p == 0.1);
  CHECK(m2.solarize_p == 0.2);
  const auto tr = wb::view_preset("train");
  CHECK(tr.random_crop);
  CHECK(tr.jitter_p == 0.0);
  CHECK(tr.flip_p == 0.5);
  const auto ev = wb::view_preset("eval");
  CHECK_FALSE(ev.random_crop);
  CHECK(ev.flip_p == 0.0);
  CHECK(ev.blur_p == 0.0);
  const auto co = wb::view_preset("color_only");
  CHECK_FALSE(co.random_crop);
  CHECK(co.flip_p == 0.0);
  CHECK(co.jitter_p == 0.8);
  CHECK(co.grayscale_p == 0.2);
  CHECK_THROWS_WITH_AS(wb::view_preset("mocoo"), doctest::Contains("moco1"), std::invalid_argument);
  wbtest::SyntheticDataset data({0}, 1, 8);
  const auto r = resolve_recipe(wb::view_preset("moco1"), data);
  CHECK(r.size == 8);
  CHECK(r.mean == std::vector<double>{0.5});
  wb::ViewRecipe bad = wb::view_preset("moco1");
  bad.scale_min = 0.0;
  CHECK_THROWS_WITH_AS(resolve_recipe(bad, data), doctest::Contains("scale_min"),
                       std::invalid_argument);
  bad = wb::view_preset("moco1");
  bad.flip_p = 1.5;
  CHECK_THROWS_WITH_AS(resolve_recipe(bad, data), doctest::Contains("flip_p"),
                       std::invalid_argument);
}

TEST_CASE("moco views on one channel: jitter acts through brightness and contrast only") {
  // All pixels equal: contrast and saturation/hue cannot change them, brightness can only
  // scale them, so every view is a scaled constant (or blurred constant = same constant).
  wb::Image img = gray_image(16, 16, std::vector<std::uint8_t>(256, 100));
  wb::ViewRecipe r = wb::view_preset("moco2");
  r.size = 16;
  r.mean = {0.0};
  r.std = {1.0};
  r.solarize_p = 0.0;
  std::mt19937_64 rng(5);
  std::vector<float> out(256);
  for (int t = 0; t < 10; ++t) {
    make_view(img, r, rng, out.data());
    for (float v : out) CHECK(v == doctest::Approx(out[0]).epsilon(1e-5));
    CHECK(out[0] >= 100 / 255.0 * 0.6 - 1e-5);
    CHECK(out[0] <= 100 / 255.0 * 1.4 + 1e-5);
  }
}

TEST_CASE("view recipe overrides match the configuration schema") {
  wb::Params p("views.view2");
  p.set("blur_p", 0.5);
  p.set("size", std::int64_t{16});
  p.set("random_crop", false);
  p.set("mean", std::vector<double>{0.1});
  const wb::ViewRecipe r = wb::apply_view_overrides(wb::view_preset("moco2"), p);
  CHECK(r.blur_p == 0.5);
  CHECK(r.size == 16);
  CHECK_FALSE(r.random_crop);
  CHECK(r.mean == std::vector<double>{0.1});
  CHECK(r.solarize_p == 0.2);  // untouched keys keep the preset's values
  p.set("blurr_p", 0.5);
  CHECK_THROWS_WITH_AS(wb::apply_view_overrides(wb::view_preset("moco2"), p),
                       doctest::Contains("unknown view recipe key 'blurr_p' in views.view2"),
                       std::invalid_argument);
  // Every key the configuration schema accepts for [views.viewN] must map to a field.
  CHECK(wb::view_override_schema().size() == 21);
  for (const auto& spec : wb::view_override_schema()) {
    wb::Params one("views.view1");
    switch (spec.type) {
      case wb::ParamType::Bool:
        one.set(spec.name, true);
        break;
      case wb::ParamType::Int:
        one.set(spec.name, std::int64_t{8});
        break;
      case wb::ParamType::FloatList:
        one.set(spec.name, std::vector<double>{0.5});
        break;
      default:
        one.set(spec.name, 0.25);
        break;
    }
    CHECK_NOTHROW(wb::apply_view_overrides(wb::view_preset("moco1"), one));
  }
}
