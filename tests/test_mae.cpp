// MAE (docs/methods.md §8): the masking helpers, the mask through the backbone interface (the
// encoder and its MoE layers see only the visible patches), the `mae` loss's decoder positions
// and its masked-patch loss against plain re-computations, and the masked PSNR.
#include <doctest/doctest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <set>

#include "built_plugins.h"
#include "test_ogar_helpers.h"
#include "workbench/backbone.h"
#include "workbench/loss.h"
#include "workbench/masking.h"
#include "workbench/registry.h"

namespace {

using wb_test::plugins;

const auto kLong = at::TensorOptions().dtype(at::kLong);

// A tiny ViT on 16 x 16 images of `channels` channels: 4 x 4 patches (grid 4, N = 16), width 8.
std::shared_ptr<wb::Backbone> tiny_vit(std::int64_t experts, std::int64_t channels = 1) {
  wb::Params p = plugins().defaults(wb::Kind::Backbone, "vit");
  p.set("dim", std::int64_t{8});
  p.set("depth", std::int64_t{4});
  p.set("heads", std::int64_t{2});
  p.set("patch", std::int64_t{4});
  if (experts > 0) {
    p.set("experts", experts);
    p.set("moe_last", std::int64_t{2});
  }
  wb::Params gate = plugins().defaults(wb::Kind::Gate, "noisy_topk");
  gate.set("k", std::int64_t{1});
  wb::BackboneContext context;
  context.channels = channels;
  context.image_size = 16;
  context.make_gate = [gate](const wb::GateShape& s) {
    return plugins().make_gate("noisy_topk", gate, s);
  };
  return plugins().make_backbone("vit", p, context);
}

// The mae loss for images of `channels` x 8 x 8 in 4 x 4 patches (grid 2), encoder width 8.
std::shared_ptr<wb::Loss> tiny_mae(bool norm_pix, std::int64_t channels = 2) {
  wb::Params p = plugins().defaults(wb::Kind::Loss, "mae");
  p.set("decoder_dim", std::int64_t{8});
  p.set("decoder_depth", std::int64_t{1});
  p.set("decoder_heads", std::int64_t{2});
  p.set("norm_pix_loss", norm_pix);
  wb::LossContext c = crmoe_test::loss_context(plugins(), 2, 8);
  c.channels = channels;
  c.image_size = 8;
  return plugins().make_loss("mae", p, c);
}

double value(const at::Tensor& t) {
  return t.item<double>();
}

}  // namespace

TEST_CASE("masking: K = floor(N (1 - r)) distinct visible patches per image, in ascending order") {
  CHECK(wb::visible_count(196, 0.75) == 49);  // ViT-B/16 at 224 px: MAE keeps 49 of 196
  CHECK(wb::visible_count(49, 0.75) == 12);   // 28 px in 4 px patches: floor(12.25)
  CHECK(wb::visible_count(16, 0.0) == 16);
  CHECK_THROWS_WITH_AS(wb::visible_count(3, 0.75), doctest::Contains("leaves no visible patch"),
                       std::invalid_argument);
  CHECK_THROWS_AS(wb::visible_count(16, 1.0), std::invalid_argument);

  at::manual_seed(3);
  const at::Tensor keep = wb::random_keep(64, 49, 0.75, at::TensorOptions());
  REQUIRE(keep.sizes() == at::IntArrayRef{64, 12});
  CHECK((keep.scalar_type() == at::kLong));
  std::set<std::vector<std::int64_t>> distinct_masks;
  at::Tensor kept_per_patch = at::zeros({49}, kLong);
  for (std::int64_t b = 0; b < 64; ++b) {
    std::vector<std::int64_t> row;
    for (std::int64_t j = 0; j < 12; ++j) row.push_back(keep[b][j].item<std::int64_t>());
    for (std::size_t j = 1; j < row.size(); ++j) CHECK(row[j - 1] < row[j]);  // distinct, sorted
    CHECK(row.front() >= 0);
    CHECK(row.back() < 49);
    distinct_masks.insert(row);
    for (auto i : row) kept_per_patch[i] += 1;
  }
  CHECK(distinct_masks.size() == 64);  // every image draws its own mask
  // Every position can be visible: 64 x 12 = 768 draws over 49 positions, none left out.
  CHECK(kept_per_patch.min().item<std::int64_t>() > 0);

  const at::Tensor masked = wb::masked_patches(keep, 49);
  REQUIRE(masked.sizes() == at::IntArrayRef{64, 49});
  CHECK(masked.sum(1).eq(37).all().item<bool>());
  CHECK_FALSE(masked.gather(1, keep).any().item<bool>());

  // The same generator seed gives the same masks; the global generator is left alone.
  at::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(7);
  at::Generator g2 = at::make_generator<at::CPUGeneratorImpl>(7);
  CHECK(wb::random_keep(4, 16, 0.5, at::TensorOptions(), g1)
            .equal(wb::random_keep(4, 16, 0.5, at::TensorOptions(), g2)));
}

TEST_CASE(
    "masking: patchify flattens a patch as (pixel row, pixel column, channel), unpatchify inverts "
    "it") {
  const at::Tensor images =
      at::arange(2 * 3 * 8 * 8, at::TensorOptions().dtype(at::kFloat)).view({2, 3, 8, 8});
  const at::Tensor patches = wb::patchify(images, 4);
  REQUIRE(patches.sizes() == at::IntArrayRef{2, 4, 48});
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t r = 0; r < 2; ++r)
      for (std::int64_t c = 0; c < 2; ++c)
        for (std::int64_t i = 0; i < 4; ++i)
          for (std::int64_t j = 0; j < 4; ++j)
            for (std::int64_t ch = 0; ch < 3; ++ch)
              CHECK(patches[b][r * 2 + c][(i * 4 + j) * 3 + ch].item<float>() ==
                    images[b][ch][r * 4 + i][c * 4 + j].item<float>());
  CHECK(wb::unpatchify(patches, 4, 3).equal(images));
}

TEST_CASE("vit: under a mask the encoder and its MoE layers see only the visible patches") {
  at::manual_seed(0);
  auto vit = tiny_vit(4);
  vit->eval();
  REQUIRE(vit->moe_blocks() == std::vector<std::int64_t>{1, 3});
  wb::RoutingContext context;
  context.training = false;  // no gate noise: the same input routes the same way
  const at::Tensor images = at::randn({3, 1, 16, 16});
  const wb::BackboneOutput full = vit->forward(images, context);
  CHECK_FALSE(full.keep.defined());

  // Every patch visible: the same forward as without a mask.
  context.keep = at::arange(16, kLong).repeat({3, 1});
  const wb::BackboneOutput all = vit->forward(images, context);
  CHECK(at::allclose(all.cls, full.cls, 1e-5, 1e-6));
  CHECK(at::allclose(all.patches, full.patches, 1e-5, 1e-6));

  // Four visible patches per image.
  context.keep = at::tensor({0, 5, 6, 15, 1, 2, 3, 4, 3, 8, 9, 12}, kLong).view({3, 4});
  const wb::BackboneOutput out = vit->forward(images, context);
  CHECK(out.cls.sizes() == at::IntArrayRef{3, 8});
  CHECK(out.patches.sizes() == at::IntArrayRef{3, 4, 8});
  REQUIRE(out.keep.defined());
  CHECK(out.keep.equal(context.keep));
  REQUIRE(out.routings.size() == 2);
  for (const auto& r : out.routings) {
    CHECK(r.tokens_per_image == 5);  // CLS + 4 visible patches
    CHECK(r.experts.sizes() == at::IntArrayRef{15, 1});
    CHECK(r.tokens.size(0) == 15);
  }

  // Only visible pixels matter: changing a hidden patch changes nothing, a visible one does.
  at::Tensor hidden = images.clone();
  hidden[0].narrow(1, 0, 4).narrow(2, 4, 4).add_(5.0);  // patch 1 of image 0: hidden
  const wb::BackboneOutput same = vit->forward(hidden, context);
  CHECK(at::allclose(same.cls, out.cls, 1e-6, 1e-7));
  CHECK(at::allclose(same.patches, out.patches, 1e-6, 1e-7));
  CHECK(at::allclose(same.routings[0].tokens, out.routings[0].tokens, 1e-6, 1e-7));
  at::Tensor visible = images.clone();
  visible[0].narrow(1, 4, 4).narrow(2, 4, 4).add_(5.0);  // patch 5 of image 0: visible
  const wb::BackboneOutput changed = vit->forward(visible, context);
  CHECK_FALSE(at::allclose(changed.cls[0], out.cls[0]));
  CHECK(at::allclose(changed.cls[1], out.cls[1], 1e-5, 1e-6));  // images never mix

  context.keep = at::zeros({2, 4}, kLong);  // wrong batch size
  CHECK_THROWS_WITH_AS(vit->forward(images, context), doctest::Contains("RoutingContext::keep"),
                       std::invalid_argument);
}

TEST_CASE("mae: the decoder's positions are MAE's 2-D sin-cos layout (column half first)") {
  auto loss = tiny_mae(true);
  const auto buffers = loss->named_buffers();
  const at::Tensor* pos = buffers.find("decoder_pos_embed");
  REQUIRE(pos != nullptr);
  REQUIRE(pos->sizes() == at::IntArrayRef{1, 5, 8});  // CLS + 2 x 2 patches, decoder width 8
  for (std::int64_t d = 0; d < 8; ++d) CHECK((*pos)[0][0][d].item<double>() == 0.0);
  const std::int64_t q = 2;  // dim / 4 frequencies
  for (std::int64_t r = 0; r < 2; ++r)
    for (std::int64_t c = 0; c < 2; ++c)
      for (std::int64_t i = 0; i < q; ++i) {
        const double w = std::pow(10000.0, -static_cast<double>(i) / q);
        const at::Tensor row = (*pos)[0][1 + r * 2 + c];
        CHECK(row[i].item<double>() == doctest::Approx(std::sin(c * w)).epsilon(1e-6));
        CHECK(row[q + i].item<double>() == doctest::Approx(std::cos(c * w)).epsilon(1e-6));
        CHECK(row[2 * q + i].item<double>() == doctest::Approx(std::sin(r * w)).epsilon(1e-6));
        CHECK(row[3 * q + i].item<double>() == doctest::Approx(std::cos(r * w)).epsilon(1e-6));
      }
  // A fixed buffer, not a parameter: nothing trains it.
  CHECK(loss->named_parameters().find("decoder_pos_embed") == nullptr);
  CHECK(loss->requirements().mask_ratio == doctest::Approx(0.75));
  CHECK(loss->requirements().views == 1);
  CHECK(loss->reconstructs());
}

TEST_CASE("mae: the loss is the per-patch MSE over the masked patches only (hand computation)") {
  for (const bool norm_pix : {false, true}) {
    CAPTURE(norm_pix);
    at::manual_seed(1);
    auto loss = tiny_mae(norm_pix);
    const std::int64_t B = 2, C = 2, P = 4;
    at::Tensor images = at::randn({B, C, 8, 8}).requires_grad_(true);
    wb::BackboneOutput out;
    out.cls = at::randn({B, 8}).requires_grad_(true);
    out.patches = at::randn({B, 2, 8}).requires_grad_(true);
    out.keep = at::tensor({0, 3, 1, 2}, kLong).view({B, 2});  // masked: {1, 2} and {0, 3}
    wb::Batch batch;
    batch.views = {images};
    wb::StepState state;
    state.batch = &batch;
    state.online = {out};
    const wb::LossResult result = loss->compute(state);

    // Independent: the decoder's reconstruction compared block by block with the image.
    at::Tensor rebuilt;
    {
      at::NoGradGuard no_grad;
      rebuilt = loss->reconstruct(images.detach(), out).to(at::kDouble);
    }
    const at::Tensor x = images.detach().to(at::kDouble);
    double sum = 0;
    int count = 0;
    const std::int64_t masked[2][2] = {{1, 2}, {0, 3}};
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t n : masked[b]) {
        const at::Tensor block_x = x[b].narrow(1, (n / 2) * P, P).narrow(2, (n % 2) * P, P);
        const at::Tensor block_r = rebuilt[b].narrow(1, (n / 2) * P, P).narrow(2, (n % 2) * P, P);
        double scale = 1;
        if (norm_pix) {  // the patch's own statistics over all its pixels and channels
          const double mean = value(block_x.sum()) / (C * P * P);
          const double var = value((block_x - mean).pow(2).sum()) / (C * P * P - 1);
          scale = std::sqrt(var + 1e-6);
        }
        sum += value((block_r - block_x).pow(2).sum()) / (C * P * P) / (scale * scale);
        ++count;
      }
    CHECK(value(result.value) == doctest::Approx(sum / count).epsilon(1e-5));
    CHECK(result.metrics.at("reconstruction") == doctest::Approx(sum / count).epsilon(1e-5));

    // Gradients: none reaches the pixels of visible patches; the masked ones and the encoded
    // visible tokens get some.
    result.value.backward();
    const at::Tensor g = wb::patchify(images.grad(), P).abs().sum({-1});  // [B, N]
    CHECK(value(g[0][0]) == 0.0);
    CHECK(value(g[0][3]) == 0.0);
    CHECK(value(g[1][1]) == 0.0);
    CHECK(value(g[1][2]) == 0.0);
    CHECK(value(g[0][1]) > 0);
    CHECK(value(g[1][3]) > 0);
    CHECK(value(out.patches.grad().abs().sum()) > 0);
    CHECK(value(out.cls.grad().abs().sum()) > 0);  // the CLS token enters the decoder
  }
}

TEST_CASE("mae: bad settings are refused with the parameter named") {
  wb::Params p = plugins().defaults(wb::Kind::Loss, "mae");
  p.set("decoder_dim", std::int64_t{10});
  p.set("decoder_heads", std::int64_t{5});
  wb::LossContext c = crmoe_test::loss_context(plugins(), 2, 8);
  c.channels = 1;
  c.image_size = 8;
  CHECK_THROWS_WITH_AS(plugins().make_loss("mae", p, c), doctest::Contains("multiple of 4"),
                       std::invalid_argument);
  p.set("decoder_heads", std::int64_t{3});
  CHECK_THROWS_WITH_AS(plugins().make_loss("mae", p, c), doctest::Contains("decoder_heads"),
                       std::invalid_argument);
  c.channels = 0;
  p = plugins().defaults(wb::Kind::Loss, "mae");
  CHECK_THROWS_WITH_AS(plugins().make_loss("mae", p, c), doctest::Contains("image shape"),
                       std::invalid_argument);
}

TEST_CASE("masked_psnr: 10 log10(1 / MSE) over the masked patches only (hand values)") {
  // 1 channel, 4 x 4 image in 2 x 2 patches; patches 1 and 2 visible, 0 and 3 masked.
  const at::Tensor original = at::full({1, 1, 4, 4}, 0.5);
  at::Tensor rebuilt = original.clone();
  rebuilt[0][0].narrow(0, 0, 2).narrow(1, 0, 2).add_(0.1);   // patch 0: error 0.1 everywhere
  rebuilt[0][0].narrow(0, 2, 2).narrow(1, 2, 2).add_(-0.2);  // patch 3: error 0.2
  rebuilt[0][0].narrow(0, 0, 2).narrow(1, 2, 2).add_(0.4);   // patch 1 is visible: ignored
  const at::Tensor keep = at::tensor({1, 2}, kLong).view({1, 2});
  const double mse = (4 * 0.01 + 4 * 0.04) / 8;  // 0.025
  CHECK(value(wb::masked_psnr(original, rebuilt, keep, 2)[0]) ==
        doctest::Approx(10 * std::log10(1 / mse)).epsilon(1e-9));  // 16.02 dB
  CHECK(std::isinf(value(wb::masked_psnr(original, original, keep, 2)[0])));
}
