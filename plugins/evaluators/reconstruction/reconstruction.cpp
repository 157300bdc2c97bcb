// Evaluator "reconstruction" (MAE pictures; MoCE Fig. 3d's PSNR; docs/methods.md §8): the run's
// reconstructing loss (Loss::reconstructs(), e.g. `mae`) rebuilds eval-view images of a split
// from their visible patches, under masks drawn from a generator seeded with the run's seed (the
// same masks at every evaluation). Reported:
//   psnr: mean over images of each image's PSNR over its masked patches (wb::masked_psnr), with
//         the data set's normalisation undone and the reconstruction clamped to [0, 1], peak 1;
//   mse:  the mean over images of the masked-patch mean squared error in those pixel units.
// Picture: for the first `pictures` images (spread over the split), a row of original | masked
// (hidden patches grey) | reconstruction | reconstruction with the visible patches pasted back.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "workbench/draw.h"
#include "workbench/eval_tools.h"
#include "workbench/evaluator.h"
#include "workbench/masking.h"
#include "workbench/plugin.h"

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error("reconstruction: " + what);
}

// [C, H, W] pixels in [0, 1] -> an 8-bit image.
wb::Image to_image(const at::Tensor& pixels) {
  const at::Tensor v = pixels.to(at::kCPU, at::kDouble).clamp(0, 1).contiguous();
  const auto C = v.size(0), H = v.size(1), W = v.size(2);
  wb::Image out{C, H, W, {}};
  out.pixels.resize(static_cast<std::size_t>(C * H * W));
  const double* x = v.data_ptr<double>();
  for (std::int64_t c = 0; c < C; ++c)
    for (std::int64_t i = 0; i < H * W; ++i)
      out.pixels[static_cast<std::size_t>(i * C + c)] =
          static_cast<std::uint8_t>(std::lround(x[c * H * W + i] * 255.0));
  return out;
}

class Reconstruction final : public wb::Evaluator {
 public:
  explicit Reconstruction(const wb::Params& p)
      : dataset_(p.text("dataset")),
        split_name_(p.text("split")),
        split_(wb::split_named(split_name_)),
        images_(p.integer("images")),
        pictures_(p.integer("pictures")),
        mask_ratio_(p.maybe_real("mask_ratio")),
        scale_(p.integer("scale")) {}

  wb::EvalResult evaluate(wb::EvalContext& ctx) override {
    wb::Loss* loss = nullptr;
    for (wb::Loss* l : ctx.losses())
      if (l->reconstructs()) {
        loss = l;
        break;
      }
    if (!loss) fail("no loss of this run reconstructs images (a masked autoencoder such as mae)");
    const double ratio = mask_ratio_.value_or(loss->requirements().mask_ratio);
    if (!(ratio > 0 && ratio < 1))
      fail("mask ratio " + std::to_string(ratio) + " is not in (0, 1)");

    auto data = ctx.dataset(dataset_, split_);
    if (images_ < data->size())
      data = wb::subset(data, wb::spread_items(data->size(), images_), "reconstruction images");
    const std::vector<double> mean = data->pixel_mean(), stdev = data->pixel_std();
    wb::LoaderOptions options = ctx.loader_options();
    options.shuffle = false;
    options.drop_last = false;
    wb::Loader loader(data, {ctx.recipe("eval")}, options);
    loader.start_epoch(0);

    wb::Backbone& backbone = ctx.backbone();
    const std::int64_t grid = backbone.patch_grid(), N = grid * grid;
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(ctx.seed());
    std::vector<double> psnr, mse;
    std::vector<std::vector<wb::Image>> rows;
    at::NoGradGuard no_grad;
    while (auto batch = loader.next()) {
      const wb::Batch b = batch->to(ctx.device());
      const at::Tensor& images = b.views.front();
      const auto B = images.size(0), C = images.size(1), patch = images.size(2) / grid;
      wb::RoutingContext context;
      context.training = false;
      context.keep = wb::random_keep(B, N, ratio, at::TensorOptions(), generator).to(ctx.device());
      context.cluster = b.cluster;  // MoCE: the images' clusters route a cluster gate
      wb::BackboneOutput out = backbone.forward(images, context);
      if (out.patches.size(1) != context.keep.size(1))
        fail("the backbone encoded every patch: it ignores the mask (RoutingContext::keep)");
      out.keep = context.keep;
      const at::Tensor shift = at::tensor(mean, images.options()).view({1, C, 1, 1});
      const at::Tensor scale = at::tensor(stdev, images.options()).view({1, C, 1, 1});
      const at::Tensor original = images * scale + shift;
      const at::Tensor rebuilt = (loss->reconstruct(images, out) * scale + shift).clamp(0, 1);
      const at::Tensor p = wb::masked_psnr(original, rebuilt, context.keep, patch).cpu();
      const at::Tensor e = at::pow(10.0, -p / 10.0);
      for (std::int64_t i = 0; i < B; ++i) {
        psnr.push_back(p[i].item<double>());
        mse.push_back(e[i].item<double>());
      }
      for (std::int64_t i = 0; i < B && static_cast<std::int64_t>(rows.size()) < pictures_; ++i)
        rows.push_back(picture_row(original[i], rebuilt[i], context.keep[i], patch));
    }
    if (psnr.empty()) fail("no images in " + data->describe());

    wb::EvalResult r;
    double sum_mse = 0;
    for (double x : mse) sum_mse += x;
    double sum_psnr = 0;
    for (double x : psnr) sum_psnr += std::min(x, 100.0);  // an exact patch counts as 100 dB
    r.scalars["psnr"] = sum_psnr / static_cast<double>(psnr.size());
    r.scalars["mse"] = sum_mse / static_cast<double>(mse.size());
    r.scalars["mask_ratio"] = ratio;
    if (!rows.empty()) r.files.push_back(write_pictures(ctx, rows));
    ctx.info("reconstruction: PSNR " + std::to_string(r.scalars["psnr"]) + " dB over the masked " +
             "patches of " + std::to_string(psnr.size()) + " images");
    return r;
  }

 private:
  // original | masked | reconstruction | reconstruction + visible, pixels in [0, 1].
  static std::vector<wb::Image> picture_row(const at::Tensor& original, const at::Tensor& rebuilt,
                                            const at::Tensor& keep, std::int64_t patch) {
    const auto C = original.size(0), side = original.size(1), grid = side / patch;
    const at::Tensor hidden = wb::masked_patches(keep.unsqueeze(0), grid * grid)
                                  .view({1, 1, grid, 1, grid, 1})
                                  .expand({1, C, grid, patch, grid, patch})
                                  .reshape({1, C, side, side})[0]
                                  .to(original.scalar_type());
    const at::Tensor masked = original * (1 - hidden) + 0.5 * hidden;
    const at::Tensor pasted = original * (1 - hidden) + rebuilt * hidden;
    return {to_image(original), to_image(masked), to_image(rebuilt), to_image(pasted)};
  }

  std::string write_pictures(wb::EvalContext& ctx,
                             const std::vector<std::vector<wb::Image>>& rows) const {
    const std::int64_t side = rows.front().front().width * scale_, gap = 4;
    const auto columns = static_cast<std::int64_t>(rows.front().size());
    wb::Image sheet =
        wb::rgb_image(gap + columns * (side + gap),
                      gap + static_cast<std::int64_t>(rows.size()) * (side + gap), {70, 90, 140});
    for (std::size_t y = 0; y < rows.size(); ++y)
      for (std::size_t x = 0; x < rows[y].size(); ++x)
        wb::paste(sheet, rows[y][x], gap + static_cast<std::int64_t>(x) * (side + gap),
                  gap + static_cast<std::int64_t>(y) * (side + gap), scale_);
    const std::string file =
        "reconstruction_" + (dataset_.empty() ? "" : dataset_ + "_") + split_name_ + ".png";
    wb::write_png((ctx.output_dir() / file).string(), sheet);
    return file;
  }

  std::string dataset_, split_name_;
  wb::Split split_;
  std::int64_t images_, pictures_;
  std::optional<double> mask_ratio_;
  std::int64_t scale_;
};

}  // namespace

WORKBENCH_PLUGIN("MAE reconstructions and their PSNR") {
  using wb::ParamSpec;
  registry.add_evaluator(
      "reconstruction",
      "masked-image reconstructions by the run's reconstructing loss (mae): PSNR over the masked "
      "patches (MoCE Fig. 3d) and a picture original | masked | reconstruction | + visible",
      {ParamSpec::text("dataset", "", "data set name ('' = the run's own)"),
       ParamSpec::text("split", "test", "split the images come from")
           .one_of({"train", "val", "test"}),
       ParamSpec::integer("images", 1000, "images measured (spread evenly over the split)")
           .at_least(1),
       ParamSpec::integer("pictures", 8, "images shown in the picture (0 = none)").at_least(0),
       ParamSpec::optional("mask_ratio", wb::ParamType::Float,
                           "fraction of patches hidden; unset = the loss's own")
           .range(0.01, 0.99),
       ParamSpec::integer("scale", 4, "pixels per image pixel in the picture").range(1, 32)},
      [](const wb::Params& p) { return std::make_shared<Reconstruction>(p); });
}
