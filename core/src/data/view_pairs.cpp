// The `workbench views` picture (data/view_pairs.h), drawn with the SDK's raster helpers.
#include "data/view_pairs.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "data/view_pipeline.h"
#include "workbench/draw.h"
#include "workbench/geometry.h"

namespace wb {

namespace {

constexpr Rgb kView1{230, 40, 40}, kView2{40, 110, 255}, kFlip{255, 210, 0}, kGrid{90, 90, 90};
constexpr Rgb kWhite{255, 255, 255};

Rgb hue_colour(double h) {
  // Fully saturated colour around the hue circle, a little dark to show on white and grey.
  const double k[3] = {std::fmod(5 + h * 6, 6), std::fmod(3 + h * 6, 6), std::fmod(1 + h * 6, 6)};
  std::uint8_t out[3];
  for (int i = 0; i < 3; ++i)
    out[i] = static_cast<std::uint8_t>(
        std::lround(220 * (1 - std::max(0.0, std::min({k[i], 4 - k[i], 1.0})))));
  return {out[0], out[1], out[2]};
}

// A view tensor [C, S, S] back to 8 bits: undo the normalisation, clamp.
Image to_image(const at::Tensor& view, const ViewRecipe& r) {
  const at::Tensor v = view.contiguous();
  const std::int64_t C = v.size(0), S = v.size(1);
  const float* p = v.data_ptr<float>();
  Image img;
  img.channels = C;
  img.height = img.width = S;
  img.pixels.resize(static_cast<std::size_t>(C * S * S));
  for (std::int64_t c = 0; c < C; ++c) {
    const double m = r.mean.size() == 1 ? r.mean[0] : r.mean[static_cast<std::size_t>(c)];
    const double s = r.std.size() == 1 ? r.std[0] : r.std[static_cast<std::size_t>(c)];
    for (std::int64_t i = 0; i < S * S; ++i) {
      const double x = std::clamp(p[c * S * S + i] * s + m, 0.0, 1.0);
      img.pixels[static_cast<std::size_t>(i * C + c)] =
          static_cast<std::uint8_t>(std::lround(x * 255));
    }
  }
  return img;
}

// An outline given by its corners [x0, x1) x [y0, y1).
void box(Image& image, std::int64_t x0, std::int64_t y0, std::int64_t x1, std::int64_t y1, Rgb c,
         std::int64_t thickness) {
  outline_rect(image, x0, y0, x1 - x0, y1 - y0, c, thickness);
}

std::string describe_pair(const Batch& batch, std::int64_t i, std::int64_t matched,
                          std::int64_t patches) {
  char text[256];
  auto b = [&](int v, int k) { return batch.geometry[v].box[i][k].item<double>(); };
  auto flipped = [&](int v) { return batch.geometry[v].flip[i].item<bool>() ? " flipped" : ""; };
  std::snprintf(text, sizeof text,
                "image %lld (label %lld): view 1 box (%.3f %.3f %.3f %.3f)%s, view 2 box "
                "(%.3f %.3f %.3f %.3f)%s, %lld of %lld patches matched",
                static_cast<long long>(batch.index[i].item<std::int64_t>()),
                static_cast<long long>(batch.labels[i].item<std::int64_t>()), b(0, 0), b(0, 1),
                b(0, 2), b(0, 3), flipped(0), b(1, 0), b(1, 1), b(1, 2), b(1, 3), flipped(1),
                static_cast<long long>(matched), static_cast<long long>(patches));
  return text;
}

}  // namespace

ViewPairs draw_view_pairs(std::shared_ptr<const Dataset> data, std::vector<ViewRecipe> recipes,
                          const ViewPairsOptions& options) {
  if (options.pairs <= 0) throw std::invalid_argument("view pairs: pairs must be > 0");
  if (recipes.size() != 2) throw std::invalid_argument("view pairs: needs two view recipes");
  LoaderOptions lo;
  lo.batch_size = std::min<std::int64_t>(options.pairs, data->size());
  lo.workers = 0;
  lo.seed = options.seed;
  lo.drop_last = false;
  Loader loader(data, recipes, lo);
  const Batch batch = *loader.next();
  for (auto& r : recipes) r = data::resolve_recipe(r, *data);  // the mean/std the loader used

  const std::int64_t S = recipes[0].size;
  if (recipes[1].size != S) throw std::invalid_argument("both views must have the same size");
  ViewPairs out;
  const std::int64_t grid = options.grid > 0 ? options.grid : std::max<std::int64_t>(1, S / 4);
  out.grid = grid;
  const at::Tensor iou =
      box_iou(patch_boxes(batch.geometry[0], grid), patch_boxes(batch.geometry[1], grid));
  const auto [best, match] = iou.max(2);
  const at::Tensor valid = best > options.lambda;

  const std::int64_t side = data->image_size();
  const std::int64_t k =
      options.scale > 0 ? options.scale : std::max<std::int64_t>(1, (160 + S - 1) / S);
  const std::int64_t ko = std::max<std::int64_t>(1, (S * k) / side);  // original at a similar size
  const std::int64_t gap = 12, pad = 8, bar = 4;
  const std::int64_t ow = side * ko, vw = S * k, n = batch.size();
  const std::int64_t row_h = std::max(ow, vw) + bar + pad;
  Image& canvas = out.image;
  canvas = rgb_image(pad + ow + gap + vw + gap + vw + pad, pad + n * row_h, kWhite);
  const double cell = static_cast<double>(vw) / static_cast<double>(grid);

  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t y0 = pad + i * row_h + bar;
    const std::int64_t x_orig = pad, x_v1 = pad + ow + gap, x_v2 = x_v1 + vw + gap;
    paste(canvas, data->image(batch.index[i].item<std::int64_t>()), x_orig, y0, ko);
    const std::int64_t xs[2] = {x_v1, x_v2};
    const Rgb colours[2] = {kView1, kView2};
    for (int v = 0; v < 2; ++v) {
      paste(canvas, to_image(batch.views[v][i], recipes[v]), xs[v], y0, k);
      const at::Tensor b = batch.geometry[v].box[i];
      const double bx = b[0].item<double>(), by = b[1].item<double>();
      const double bw = b[2].item<double>(), bh = b[3].item<double>();
      box(canvas, x_orig + std::lround(bx * ow), y0 + std::lround(by * ow),
          x_orig + std::lround((bx + bw) * ow), y0 + std::lround((by + bh) * ow), colours[v], 2);
      box(canvas, xs[v] - 2, y0 - 2, xs[v] + vw + 2, y0 + vw + 2, colours[v], 2);
      if (batch.geometry[v].flip[i].item<bool>())
        fill_rect(canvas, xs[v], y0 - bar - 2, vw, bar, kFlip);
      for (std::int64_t g = 1; g < grid; ++g) {
        const auto off = std::lround(g * cell);
        for (std::int64_t t = 0; t < vw; t += 2) {
          fill_rect(canvas, xs[v] + off, y0 + t, 1, 1, kGrid);
          fill_rect(canvas, xs[v] + t, y0 + off, 1, 1, kGrid);
        }
      }
    }
    std::int64_t n_valid = 0;
    for (std::int64_t m = 0; m < grid * grid; ++m) {
      if (!valid[i][m].item<bool>()) continue;
      ++n_valid;
      const std::int64_t q = match[i][m].item<std::int64_t>();
      const Rgb c = hue_colour(static_cast<double>(m) / static_cast<double>(grid * grid));
      const double mx = x_v1 + (m % grid) * cell, my = y0 + (m / grid) * cell;
      const double qx = x_v2 + (q % grid) * cell, qy = y0 + (q / grid) * cell;
      box(canvas, std::lround(mx) + 1, std::lround(my) + 1, std::lround(mx + cell),
          std::lround(my + cell), c, 2);
      box(canvas, std::lround(qx) + 1, std::lround(qy) + 1, std::lround(qx + cell),
          std::lround(qy + cell), c, 2);
      draw_line(canvas, mx + cell / 2, my + cell / 2, qx + cell / 2, qy + cell / 2, c);
    }
    out.lines.push_back(describe_pair(batch, i, n_valid, grid * grid));
  }
  return out;
}

}  // namespace wb
