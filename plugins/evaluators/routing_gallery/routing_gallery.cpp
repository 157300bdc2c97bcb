// Patch gallery of one MoE layer (CR-MoE Fig. 4-6, docs/methods.md §6): for every expert, the image
// patches with the highest gate weight for that expert, cut from the eval-recipe view in pixel
// space (normalisation undone), upscaled and tiled, one row per expert.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "workbench/draw.h"
#include "workbench/eval_tools.h"
#include "workbench/evaluator.h"
#include "workbench/plugin.h"

namespace {

struct Candidate {
  double gate = 0;
  std::int64_t image = -1, patch = -1;  // image: item of the probed set; patch: row-major
  wb::Image pixels;
};

class RoutingGallery final : public wb::Evaluator {
 public:
  explicit RoutingGallery(const wb::Params& p)
      : dataset_(p.text("dataset")),
        split_name_(p.text("split")),
        split_(wb::split_named(split_name_)),
        images_(p.integer("images")),
        layer_(p.integer("layer")),
        per_expert_(p.integer("per_expert")),
        tile_(p.integer("tile")) {}

  wb::EvalResult evaluate(wb::EvalContext& ctx) override {
    auto data = ctx.dataset(dataset_, split_);
    if (images_ < data->size())
      data = wb::subset(data, wb::spread_items(data->size(), images_), "routing-gallery images");
    const wb::ViewRecipe recipe = ctx.recipe("eval");
    // The normalisation the loader applies: the recipe's, else the data set's own.
    const std::vector<double> mean = recipe.mean.empty() ? data->pixel_mean() : recipe.mean;
    const std::vector<double> stdev = recipe.std.empty() ? data->pixel_std() : recipe.std;
    wb::LoaderOptions options = ctx.loader_options();
    options.shuffle = false;
    options.drop_last = false;
    wb::Loader loader(data, {recipe}, options);
    loader.start_epoch(0);

    const std::int64_t grid = ctx.backbone().patch_grid();
    std::vector<std::vector<Candidate>> best;  // per expert, best first
    std::int64_t layer = -1, seen = 0, patch_px = 0;
    while (auto batch = loader.next()) {
      const wb::Batch b = batch->to(ctx.device());
      const wb::BackboneOutput out = wb::eval_forward(ctx.backbone(), b);
      const auto L = static_cast<std::int64_t>(out.routings.size());
      if (L == 0) throw std::runtime_error("routing_gallery: the backbone has no MoE layer");
      layer = layer_ < 0 ? L + layer_ : layer_;
      if (layer < 0 || layer >= L)
        throw std::runtime_error("routing_gallery: layer " + std::to_string(layer_) +
                                 " does not exist (the backbone has " + std::to_string(L) +
                                 " MoE layers)");
      const wb::Routing& routing = out.routings[static_cast<std::size_t>(layer)];
      const auto B = b.size(), E = routing.num_experts();
      best.resize(static_cast<std::size_t>(E));
      // Gate weight of each patch token for each expert (CLS has no place in the image).
      const at::Tensor gates = routing.gates.detach()
                                   .to(at::kCPU, at::kDouble)
                                   .reshape({B, -1, E})
                                   .narrow(1, 1, grid * grid);
      const at::Tensor images = batch->views[0];  // CPU, normalised [B, C, H, W]
      patch_px = images.size(2) / grid;
      const auto keep = std::min<std::int64_t>(per_expert_, B * grid * grid);
      for (std::int64_t e = 0; e < E; ++e) {
        auto [values, where] = gates.select(2, e).flatten().topk(keep);
        auto& list = best[static_cast<std::size_t>(e)];
        for (std::int64_t j = 0; j < keep; ++j) {
          const double g = values[j].item<double>();
          if (!(g > 0)) break;  // never routed there
          if (static_cast<std::int64_t>(list.size()) >= per_expert_ && g <= list.back().gate) break;
          const std::int64_t w = where[j].item<std::int64_t>();
          Candidate c{g, seen + w / (grid * grid), w % (grid * grid), {}};
          c.pixels = crop(images[w / (grid * grid)], c.patch, grid, patch_px, mean, stdev);
          list.insert(std::upper_bound(
                          list.begin(), list.end(), c,
                          [](const Candidate& a, const Candidate& b) { return a.gate > b.gate; }),
                      std::move(c));
          if (static_cast<std::int64_t>(list.size()) > per_expert_) list.pop_back();
        }
      }
      seen += B;
    }
    if (best.empty()) throw std::runtime_error("routing_gallery: no images");
    return write(ctx, best, layer, patch_px);
  }

 private:
  // One patch of a normalised view [C, H, W], back in 8-bit pixels.
  static wb::Image crop(const at::Tensor& view, std::int64_t patch, std::int64_t grid,
                        std::int64_t px, const std::vector<double>& mean,
                        const std::vector<double>& stdev) {
    const auto C = view.size(0);
    const at::Tensor cut = view.narrow(1, (patch / grid) * px, px)
                               .narrow(2, (patch % grid) * px, px)
                               .to(at::kDouble)
                               .contiguous();
    wb::Image out{C, px, px, {}};
    out.pixels.resize(static_cast<std::size_t>(C * px * px));
    const double* v = cut.data_ptr<double>();
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t i = 0; i < px * px; ++i) {
        const double x = (v[c * px * px + i] * stdev.at(c) + mean.at(c)) * 255.0;
        out.pixels[static_cast<std::size_t>(i * C + c)] =
            static_cast<std::uint8_t>(std::clamp(std::lround(x), 0L, 255L));
      }
    return out;
  }

  wb::EvalResult write(wb::EvalContext& ctx, const std::vector<std::vector<Candidate>>& best,
                       std::int64_t layer, std::int64_t patch_px) const {
    const auto E = static_cast<std::int64_t>(best.size());
    const std::int64_t scale = std::max<std::int64_t>(1, (tile_ + patch_px - 1) / patch_px);
    const std::int64_t side = patch_px * scale, gap = 2, font = 2;
    const std::int64_t left = wb::text_width(std::to_string(E - 1), font) + 3 * gap;
    // A coloured background so that white and black patches both stand out.
    wb::Image grid = wb::rgb_image(left + per_expert_ * (side + gap) + gap, gap + E * (side + gap),
                                   {70, 90, 140});
    at::Tensor gate = at::zeros({E, per_expert_}, at::TensorOptions().dtype(at::kDouble));
    at::Tensor image = at::full({E, per_expert_}, -1.0, gate.options());
    at::Tensor patch = at::full({E, per_expert_}, -1.0, gate.options());
    for (std::int64_t e = 0; e < E; ++e) {
      const std::int64_t y = gap + e * (side + gap);
      wb::draw_text(grid, std::to_string(e), gap, y + (side - 5 * font) / 2, font, {255, 255, 255});
      const auto& list = best[static_cast<std::size_t>(e)];
      for (std::size_t j = 0; j < list.size(); ++j) {
        const auto x = left + static_cast<std::int64_t>(j) * (side + gap);
        wb::paste(grid, list[j].pixels, x, y, scale);
        gate[e][static_cast<std::int64_t>(j)] = list[j].gate;
        image[e][static_cast<std::int64_t>(j)] = static_cast<double>(list[j].image);
        patch[e][static_cast<std::int64_t>(j)] = static_cast<double>(list[j].patch);
      }
    }
    const std::string file = "routing_gallery_" + (dataset_.empty() ? "" : dataset_ + "_") +
                             split_name_ + "_moe" + std::to_string(layer) + ".png";
    wb::write_png((ctx.output_dir() / file).string(), grid);
    wb::EvalResult r;
    r.scalars["layer"] = static_cast<double>(layer);
    r.arrays["gate"] = gate;
    r.arrays["image"] = image;
    r.arrays["patch"] = patch;
    r.files.push_back(file);
    ctx.info("routing_gallery: MoE layer " + std::to_string(layer) + ", " + std::to_string(E) +
             " experts -> " + file);
    return r;
  }

  std::string dataset_, split_name_;
  wb::Split split_;
  std::int64_t images_, layer_, per_expert_, tile_;
};

}  // namespace

WORKBENCH_PLUGIN("patch gallery per expert") {
  registry.add_evaluator(
      "routing_gallery",
      "for one MoE layer, the patches with the highest gate weight for each expert, as an image "
      "grid (CR-MoE Fig. 4-6)",
      {wb::ParamSpec::text("dataset", "", "data set name ('' = the run's own)"),
       wb::ParamSpec::text("split", "test", "split the images come from")
           .one_of({"train", "val", "test"}),
       wb::ParamSpec::integer("images", 1000, "images searched (spread evenly over the split)")
           .at_least(1),
       wb::ParamSpec::integer("layer", -1, "MoE layer (0 = first; negative counts from the last)"),
       wb::ParamSpec::integer("per_expert", 16, "patches shown per expert").range(1, 256),
       wb::ParamSpec::integer("tile", 32, "smallest side of a shown patch in pixels (upscaled)")
           .range(1, 512)},
      [](const wb::Params& p) { return std::make_shared<RoutingGallery>(p); });
  // Before anything runs: the layer against the MoE layers the backbone declares (a backbone
  // that declares no shape, feature_dim 0, is checked when the evaluator runs).
  registry.add_check(
      wb::Kind::Evaluator, "routing_gallery",
      [](const wb::Params& p, const wb::ValidationContext& c, wb::ValidationReport& r) {
        if (c.feature_dim <= 0) return;
        const std::int64_t L = c.moe_layers, layer = p.integer("layer");
        if (L == 0)
          r.error("", "the backbone has no MoE layer (a dense model routes nothing)");
        else if (layer >= L || layer < -L)
          r.error("layer", "layer " + std::to_string(layer) + " does not exist (the backbone has " +
                               std::to_string(L) + " MoE layers)");
      });
}
