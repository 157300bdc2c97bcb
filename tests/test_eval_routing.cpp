// Routing evaluators on backbones whose routings are set by hand: the consistency probe's
// shared-expert counts, the expert x class map, the patch gallery; and the drawing helpers.
#include <ATen/ATen.h>
#include <doctest/doctest.h>

#include "data/codec.h"
#include "test_eval_helpers.h"
#include "workbench/draw.h"

using wbtest::FakeContext;
using wbtest::run_evaluator;

namespace {

// Top-k sets per image and token: {{cls, patch}, ...} for each image -> [images * 2, k].
at::Tensor sets(const std::vector<std::vector<std::vector<std::int64_t>>>& per_image) {
  std::vector<std::int64_t> flat;
  std::int64_t rows = 0;
  for (const auto& tokens : per_image)
    for (const auto& top : tokens) {
      flat.insert(flat.end(), top.begin(), top.end());
      ++rows;
    }
  return at::tensor(flat, at::TensorOptions().dtype(at::kLong)).view({rows, -1});
}

}  // namespace

TEST_CASE("routing_consistency: shared experts of a hand-set 2-image, 2-layer, k = 2 routing") {
  // One patch per image (grid 1): tokens are {CLS, patch}; 4 experts.
  auto backbone = std::make_shared<wbtest::ScriptedBackbone>(1, 4);
  backbone->table = {
      // view 1: layer 0, layer 1
      {sets({{{0, 1}, {2, 3}}, {{0, 2}, {1, 3}}}), sets({{{3, 2}, {0, 1}}, {{1, 0}, {0, 2}}})},
      // view 2
      {sets({{{1, 0}, {2, 1}}, {{3, 2}, {3, 1}}}), sets({{{2, 3}, {0, 3}}, {{0, 1}, {2, 0}}})}};
  const at::Tensor weights = at::tensor({0.6f, 0.15f}).repeat({4, 1});  // 2 images x 2 tokens
  backbone->gate_table = {{weights, weights}, {weights, weights}};
  FakeContext ctx;
  ctx.model = backbone;
  ctx.batch = 2;
  ctx.datasets[FakeContext::key("", wb::Split::Test)] =
      std::make_shared<wbtest::SyntheticDataset>(std::vector<std::int64_t>{0, 1}, 1, 8);
  const wb::EvalResult r = run_evaluator("routing_consistency", ctx);
  // Layer 0. Corresponding: CLS {0,1}&{1,0} = 2, {0,2}&{3,2} = 1; patch {2,3}&{2,1} = 1,
  // {1,3}&{3,1} = 2. Non-corresponding (image i of view 1, image i+1 mod 2 of view 2):
  // CLS {0,1}&{3,2} = 0, {0,2}&{1,0} = 1; patch {2,3}&{3,1} = 1, {1,3}&{2,1} = 1.
  // Layer 1. Corresponding: CLS 2, 2; patch {0,1}&{0,3} = 1, {0,2}&{2,0} = 2.
  // Non-corresponding: CLS {3,2}&{0,1} = 0, {1,0}&{2,3} = 0; patch {0,1}&{2,0} = 1,
  // {0,2}&{0,3} = 1.
  CHECK(wbtest::values(r.arrays.at("cls_corresponding")) == std::vector<double>{1.5, 2.0});
  CHECK(wbtest::values(r.arrays.at("cls_noncorresponding")) == std::vector<double>{0.5, 0.0});
  CHECK(wbtest::values(r.arrays.at("patch_corresponding")) == std::vector<double>{1.5, 1.5});
  CHECK(wbtest::values(r.arrays.at("patch_noncorresponding")) == std::vector<double>{1.0, 1.0});
  CHECK(r.scalars.at("cls_corresponding_mean") == doctest::Approx(1.75));
  CHECK(r.scalars.at("patch_noncorresponding_mean") == doctest::Approx(1.0));
  // First choices. Layer 0: corresponding CLS 0 vs 1, 0 vs 3; patch 2 vs 2, 1 vs 3;
  // non-corresponding CLS 0 vs 3, 0 vs 1; patch 2 vs 3, 1 vs 2. Layer 1: corresponding CLS
  // 3 vs 2, 1 vs 0; patch 0 vs 0, 0 vs 2; non-corresponding CLS 3 vs 0, 1 vs 2; patch 0 vs 2,
  // 0 vs 0.
  CHECK(wbtest::values(r.arrays.at("cls_first_corresponding")) == std::vector<double>{0.0, 0.0});
  CHECK(wbtest::values(r.arrays.at("patch_first_corresponding")) == std::vector<double>{0.5, 0.5});
  CHECK(wbtest::values(r.arrays.at("cls_first_noncorresponding")) == std::vector<double>{0.0, 0.0});
  CHECK(wbtest::values(r.arrays.at("patch_first_noncorresponding")) ==
        std::vector<double>{0.0, 0.5});
  // Gate weights 0.6 and 0.15 for every token: the second choice weighs a quarter of the first.
  for (const char* name : {"cls_weight_ratio", "patch_weight_ratio"})
    for (double v : wbtest::values(r.arrays.at(name))) CHECK(v == doctest::Approx(0.25));
  // Two colour-only views: same images, different colour draws, no geometric change.
  REQUIRE(backbone->inputs.size() == 2);
  CHECK_FALSE(at::equal(backbone->inputs[0], backbone->inputs[1]));
}

TEST_CASE("routing_map: fraction of each class's tokens per expert, all tokens or CLS only") {
  // 3 images of classes 0, 1, 0; one layer, 3 experts, k = 2, one patch per image.
  auto backbone = std::make_shared<wbtest::ScriptedBackbone>(1, 3);
  backbone->table = {{sets({{{0, 1}, {0, 2}}, {{2, 1}, {2, 0}}, {{1, 0}, {1, 2}}})}};
  FakeContext ctx;
  ctx.model = backbone;
  ctx.datasets[FakeContext::key("", wb::Split::Test)] =
      std::make_shared<wbtest::SyntheticDataset>(std::vector<std::int64_t>{0, 1, 0}, 1, 8);
  const wb::EvalResult all = run_evaluator("routing_map", ctx);
  // Class 0 has 4 tokens: expert 0 in 3 of them, expert 1 in 3, expert 2 in 2. Class 1 has 2:
  // expert 0 in 1, expert 1 in 1, expert 2 in 2. Rows experts, columns classes.
  CHECK(all.arrays.at("fraction").sizes() == at::IntArrayRef({1, 3, 2}));
  CHECK(wbtest::values(all.arrays.at("fraction")) ==
        std::vector<double>{0.75, 0.5, 0.75, 0.5, 0.5, 1.0});
  CHECK(wbtest::values(all.arrays.at("tokens_per_class")) == std::vector<double>{4, 2});
  REQUIRE(all.files.size() == 2);
  const wb::Image png = wb::data::decode_image_file((ctx.dir.path() / all.files[0]).string());
  CHECK(png.width > 2 * 16);
  CHECK(png.height > 3 * 16);

  backbone->seen = {0, 0};
  const wb::EvalResult cls = run_evaluator("routing_map", ctx, {{"tokens", std::string("cls")}});
  // CLS sets: class 0 {0,1}, {1,0}; class 1 {2,1}.
  CHECK(wbtest::values(cls.arrays.at("fraction")) ==
        std::vector<double>{1.0, 0.0, 1.0, 1.0, 0.0, 1.0});
}

TEST_CASE("routing_gallery: the highest-gate patches per expert, cut from the image") {
  // 2 images of 8 x 8 pixels, a 2 x 2 patch grid, 2 experts, k = 1.
  auto backbone = std::make_shared<wbtest::ScriptedBackbone>(2, 2);
  // Tokens per image: CLS, then patches 0..3. Expert 0 gets patch 3 of image 1 with the
  // highest weight, expert 1 gets patch 1 of image 0.
  const at::Tensor experts =
      at::tensor(std::vector<std::int64_t>{0, 0, 1, 0, 0, /* image 1 */ 1, 1, 0, 1, 0},
                 at::TensorOptions().dtype(at::kLong))
          .view({10, 1});
  const at::Tensor gates =
      at::tensor(std::vector<float>{0.9f, 0.5f, 0.8f, 0.6f, 0.4f, 0.9f, 0.3f, 0.7f, 0.6f, 0.95f})
          .view({10, 1});
  backbone->table = {{experts}};
  backbone->gate_table = {{gates}};
  FakeContext ctx;
  ctx.model = backbone;
  auto data = std::make_shared<wbtest::SyntheticDataset>(std::vector<std::int64_t>{0, 1}, 1, 8);
  ctx.datasets[FakeContext::key("", wb::Split::Test)] = data;
  const wb::EvalResult r = run_evaluator(
      "routing_gallery", ctx, {{"per_expert", std::int64_t{2}}, {"tile", std::int64_t{8}}});
  // Expert 0 patch gates: image 0 patches 0 (0.5), 2 (0.6), 3 (0.4); image 1 patch 1 (0.7),
  // patch 3 (0.95). Expert 1: image 0 patch 1 (0.8); image 1 patches 0 (0.3), 2 (0.6).
  const auto gate = wbtest::values(r.arrays.at("gate"));
  const std::vector<double> want_gate{0.95, 0.7, 0.8, 0.6};
  REQUIRE(gate.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) CHECK(gate[i] == doctest::Approx(want_gate[i]));
  CHECK(wbtest::values(r.arrays.at("image")) == std::vector<double>{1, 1, 0, 1});
  CHECK(wbtest::values(r.arrays.at("patch")) == std::vector<double>{3, 1, 1, 2});
  CHECK(r.scalars.at("layer") == 0);

  // The first tile of expert 0 is patch 3 (bottom right, pixels 4..7) of image 1, upscaled 2x.
  REQUIRE(r.files.size() == 1);
  const wb::Image png = wb::data::decode_image_file((ctx.dir.path() / r.files[0]).string());
  const wb::Image original = data->image(1);
  const std::int64_t left = wb::text_width("1", 2) + 6, top = 2, scale = 2;
  for (std::int64_t y = 0; y < 4; ++y)
    for (std::int64_t x = 0; x < 4; ++x) {
      const int want = original.pixels[static_cast<std::size_t>((4 + y) * 8 + 4 + x)];
      const auto at = ((top + y * scale) * png.width + left + x * scale) * png.channels;
      CHECK(std::abs(int(png.pixels[static_cast<std::size_t>(at)]) - want) <= 1);
    }
}

TEST_CASE("draw: viridis end points, heat map cells in their colours") {
  const wb::Rgb lo = wb::viridis(0), hi = wb::viridis(1), nan = wb::viridis(std::nan(""));
  CHECK((lo.r == 68 && lo.g == 1 && lo.b == 84));
  CHECK((hi.r == 253 && hi.g == 231 && hi.b == 37));
  CHECK((nan.r == lo.r && nan.g == lo.g));
  const wb::Image map = wb::heatmap({0.0, 2.0}, 1, 2, 10);
  auto count = [&](wb::Rgb c) {
    std::int64_t n = 0;
    for (std::size_t p = 0; p < map.pixels.size(); p += 3)
      n += map.pixels[p] == c.r && map.pixels[p + 1] == c.g && map.pixels[p + 2] == c.b;
    return n;
  };
  // Each cell is 10 x 10; the colour bar adds a row or so of each end colour.
  CHECK(count(lo) >= 100);
  CHECK(count(lo) < 130);
  CHECK(count(hi) >= 100);
  CHECK(count(hi) < 130);
  CHECK_THROWS(wb::heatmap({1.0}, 1, 2, 10));
}
