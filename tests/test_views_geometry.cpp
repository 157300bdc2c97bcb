// Patch geometry of views (docs/methods.md §5): patch boxes of known crops, flipped and not, IoU
// values computed by hand, argmax matches between known views.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "workbench/geometry.h"
#include "workbench/views.h"

namespace {

wb::ViewGeometry views(std::vector<std::vector<float>> boxes, std::vector<bool> flips) {
  const auto B = static_cast<std::int64_t>(boxes.size());
  wb::ViewGeometry g{at::empty({B, 4}, at::kFloat), at::empty({B}, at::kBool)};
  for (std::int64_t i = 0; i < B; ++i) {
    for (int k = 0; k < 4; ++k) g.box[i][k] = boxes[i][k];
    g.flip[i] = static_cast<bool>(flips[i]);
  }
  return g;
}

void check_box(const at::Tensor& b, std::vector<double> expect) {
  for (int k = 0; k < 4; ++k) CHECK(b[k].item<double>() == doctest::Approx(expect[k]));
}

}  // namespace

TEST_CASE("patch boxes of a 2x2 grid of a known crop, flipped and not") {
  const auto g = views({{0.2f, 0.1f, 0.4f, 0.6f}, {0.2f, 0.1f, 0.4f, 0.6f}}, {false, true});
  const at::Tensor p = wb::patch_boxes(g, 2);
  REQUIRE(p.sizes() == at::IntArrayRef({2, 4, 4}));
  // Not flipped: row-major (r, c) -> (x + c w/2, y + r h/2, w/2, h/2).
  check_box(p[0][0], {0.2, 0.1, 0.2, 0.3});
  check_box(p[0][1], {0.4, 0.1, 0.2, 0.3});
  check_box(p[0][2], {0.2, 0.4, 0.2, 0.3});
  check_box(p[0][3], {0.4, 0.4, 0.2, 0.3});
  // Flipped: column 0 of the view shows the crop's right column.
  check_box(p[1][0], {0.4, 0.1, 0.2, 0.3});
  check_box(p[1][1], {0.2, 0.1, 0.2, 0.3});
  check_box(p[1][2], {0.4, 0.4, 0.2, 0.3});
  check_box(p[1][3], {0.2, 0.4, 0.2, 0.3});
  // 3x3 grid, flipped: patch (1, 0) shows crop column 2.
  const at::Tensor q = wb::patch_boxes(views({{0.0f, 0.0f, 0.9f, 0.3f}}, {true}), 3);
  check_box(q[0][3], {0.6, 0.1, 0.3, 0.1});
}

TEST_CASE("box IoU against hand-computed values") {
  const at::Tensor a = at::tensor({0.f, 0.f, 2.f, 2.f, 0.f, 0.f, 1.f, 1.f}).reshape({1, 2, 4});
  const at::Tensor b =
      at::tensor({1.f, 1.f, 2.f, 2.f, 0.f, 0.f, 2.f, 2.f, 2.f, 0.f, 1.f, 1.f, 0.5f, 0.f, 1.f, 1.f})
          .reshape({1, 4, 4});
  const at::Tensor iou = wb::box_iou(a, b);
  REQUIRE(iou.sizes() == at::IntArrayRef({1, 2, 4}));
  CHECK(iou[0][0][0].item<double>() == doctest::Approx(1.0 / 7.0));  // overlap 1, union 7
  CHECK(iou[0][0][1].item<double>() == doctest::Approx(1.0));
  CHECK(iou[0][0][2].item<double>() == doctest::Approx(0.0));  // touching edges only
  CHECK(iou[0][0][3].item<double>() == doctest::Approx(1.0 / 4.0));
  CHECK(iou[0][1][0].item<double>() == doctest::Approx(0.0));
  CHECK(iou[0][1][1].item<double>() == doctest::Approx(0.25));
  CHECK(iou[0][1][3].item<double>() == doctest::Approx(0.5 / 1.5));
  // Zero-area boxes: 0, never NaN.
  const at::Tensor z = wb::box_iou(at::zeros({1, 1, 4}), at::zeros({1, 1, 4}));
  CHECK(z.item<double>() == 0.0);
}

TEST_CASE("argmax matches between two known views") {
  // View a: the whole image. View b: the whole image flipped, then the right 60 %.
  const auto a = views({{0, 0, 1, 1}, {0, 0, 1, 1}}, {false, false});
  const auto b = views({{0, 0, 1, 1}, {0.4f, 0, 0.6f, 1}}, {true, false});
  const at::Tensor iou = wb::box_iou(wb::patch_boxes(a, 2), wb::patch_boxes(b, 2));
  const auto [best, match] = iou.max(2);
  // Image 0: patch (r, c) of a is patch (r, 1 - c) of the flipped b, IoU 1.
  CHECK(match[0].equal(at::tensor({1, 0, 3, 2}, at::kLong)));
  CHECK(best[0].allclose(at::ones({4})));
  // Image 1: a's patch 1 (x 0.5-1, y 0-0.5) vs b's top patches (x 0.4-0.7 and 0.7-1):
  // overlaps 0.1 and 0.15, unions 0.3 and 0.25: IoU 1/3 and 0.6.
  CHECK(iou[1][1][0].item<double>() == doctest::Approx(1.0 / 3.0));
  CHECK(match[1][1].item<std::int64_t>() == 1);
  CHECK(best[1][1].item<double>() == doctest::Approx(0.6));
  // a's patch 0 (x 0-0.5) overlaps b's patch 0 by 0.05 of union 0.35: IoU 1/7, invalid at 0.2.
  CHECK(best[1][0].item<double>() == doctest::Approx(1.0 / 7.0));
  const at::Tensor valid = best > 0.2;
  CHECK(valid[1].equal(at::tensor({0, 1, 0, 1}).to(at::kBool)));
}

namespace {

// R = x and G = y of each pixel centre in normalised coordinates, B = 0.5: the mean of a
// patch's R and G is the centre of the region of the original image it shows.
class GradientDataset : public wb::Dataset {
 public:
  std::int64_t size() const override { return 16; }
  std::int64_t classes() const override { return 1; }
  std::int64_t channels() const override { return 3; }
  std::int64_t image_size() const override { return 64; }
  wb::Image image(std::int64_t) const override {
    wb::Image img;
    img.channels = 3;
    img.height = img.width = 64;
    img.pixels.resize(3 * 64 * 64);
    for (int y = 0; y < 64; ++y)
      for (int x = 0; x < 64; ++x) {
        std::uint8_t* p = &img.pixels[(y * 64 + x) * 3];
        p[0] = static_cast<std::uint8_t>(std::lround((x + 0.5) / 64 * 255));
        p[1] = static_cast<std::uint8_t>(std::lround((y + 0.5) / 64 * 255));
        p[2] = 128;
      }
    return img;
  }
  std::int64_t label(std::int64_t) const override { return 0; }
  std::string describe() const override { return "gradient"; }
};

}  // namespace

TEST_CASE("the pixels of every patch of loaded views come from where patch_boxes says") {
  // Crops and flips from the real loader; each patch's mean colour must equal the centre of
  // its box in the original image, so boxes, flips and pixels agree end to end.
  auto data = std::make_shared<GradientDataset>();
  wb::ViewRecipe r = wb::view_preset("train");
  r.size = 32;
  r.scale_min = 0.2;
  r.mean = {0.0};
  r.std = {1.0};
  wb::LoaderOptions o;
  o.batch_size = 16;
  o.workers = 1;
  wb::Loader loader(data, {r, r}, o);
  const wb::Batch b = *loader.next();
  const std::int64_t g = 4;  // 8-pixel patches
  int flipped = 0;
  for (int v = 0; v < 2; ++v) {
    const at::Tensor boxes = wb::patch_boxes(b.geometry[v], g);  // [16, 16, 4]
    // Mean of R and G over each 8 x 8 patch: [16, 3, 4, 4] -> [16, 3, 16].
    const at::Tensor means = at::avg_pool2d(b.views[v], {8, 8}).flatten(2);
    const at::Tensor cx = boxes.select(2, 0) + boxes.select(2, 2) / 2;
    const at::Tensor cy = boxes.select(2, 1) + boxes.select(2, 3) / 2;
    // Within a source pixel and a half (resampling at crop edges, 8-bit rounding).
    CHECK((means.select(1, 0) - cx).abs().max().item<double>() < 1.5 / 64);
    CHECK((means.select(1, 1) - cy).abs().max().item<double>() < 1.5 / 64);
    flipped += b.geometry[v].flip.sum().item<int>();
  }
  CHECK(flipped > 0);  // both cases were exercised
  CHECK(flipped < 32);
}
