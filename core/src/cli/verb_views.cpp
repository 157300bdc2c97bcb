// `workbench views`: draws view pairs of a data set as the loader makes them, with both crop
// boxes on the original and the overlap matches between the two views' patches, so that a
// person can check the geometry (methods.md §5) by eye.
#include <ATen/ATen.h>

#include <toml++/toml.h>
#include <boost/program_options.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "cli/cli.h"
#include "data/codec.h"
#include "data/datasets.h"
#include "data/view_pipeline.h"
#include "workbench/geometry.h"
#include "workbench/views.h"

namespace wb::cli {

namespace {

namespace po = boost::program_options;

struct Rgb {
  std::uint8_t r, g, b;
};

constexpr Rgb kView1{230, 40, 40}, kView2{40, 110, 255}, kFlip{255, 210, 0}, kGrid{90, 90, 90};

// An RGB raster with the few primitives the drawing needs.
struct Canvas {
  std::int64_t w, h;
  std::vector<std::uint8_t> px;
  Canvas(std::int64_t width, std::int64_t height)
      : w(width), h(height), px(static_cast<std::size_t>(width * height * 3), 255) {}

  void set(std::int64_t x, std::int64_t y, Rgb c) {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    std::uint8_t* p = &px[static_cast<std::size_t>((y * w + x) * 3)];
    p[0] = c.r, p[1] = c.g, p[2] = c.b;
  }
  void fill(std::int64_t x0, std::int64_t y0, std::int64_t x1, std::int64_t y1, Rgb c) {
    for (std::int64_t y = y0; y < y1; ++y)
      for (std::int64_t x = x0; x < x1; ++x) set(x, y, c);
  }
  // Outline of [x0, x1) x [y0, y1), `t` pixels thick, inside the rectangle.
  void rect(std::int64_t x0, std::int64_t y0, std::int64_t x1, std::int64_t y1, Rgb c,
            std::int64_t t = 1) {
    fill(x0, y0, x1, y0 + t, c);
    fill(x0, y1 - t, x1, y1, c);
    fill(x0, y0, x0 + t, y1, c);
    fill(x1 - t, y0, x1, y1, c);
  }
  void line(double x0, double y0, double x1, double y1, Rgb c) {
    const double n = std::max({std::abs(x1 - x0), std::abs(y1 - y0), 1.0});
    for (int i = 0; i <= static_cast<int>(n); ++i) {
      const double t = i / n;
      set(std::lround(x0 + t * (x1 - x0)), std::lround(y0 + t * (y1 - y0)), c);
    }
  }
  // An 8-bit image (1 or 3 channels) scaled up by `k` (nearest) at (x, y).
  void blit(const Image& img, std::int64_t x, std::int64_t y, std::int64_t k) {
    for (std::int64_t r = 0; r < img.height * k; ++r)
      for (std::int64_t q = 0; q < img.width * k; ++q) {
        const std::uint8_t* s =
            &img.pixels[static_cast<std::size_t>(((r / k) * img.width + q / k) * img.channels)];
        set(x + q, y + r, img.channels == 3 ? Rgb{s[0], s[1], s[2]} : Rgb{s[0], s[0], s[0]});
      }
  }
};

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
    const double m = r.mean.size() == 1 ? r.mean[0] : r.mean[c];
    const double s = r.std.size() == 1 ? r.std[0] : r.std[c];
    for (std::int64_t i = 0; i < S * S; ++i) {
      const double x = std::clamp(p[c * S * S + i] * s + m, 0.0, 1.0);
      img.pixels[static_cast<std::size_t>(i * C + c)] =
          static_cast<std::uint8_t>(std::lround(x * 255));
    }
  }
  return img;
}

std::vector<ViewRecipe> recipes_named(const std::string& spec) {
  if (spec == "moco") return {view_preset("moco1"), view_preset("moco2")};
  const auto comma = spec.find(',');
  if (comma == std::string::npos) return {view_preset(spec), view_preset(spec)};
  return {view_preset(spec.substr(0, comma)), view_preset(spec.substr(comma + 1))};
}

// dataset / path / image_size from the [base.data] (or [data]) table of a TOML file.
void read_config(const std::string& file, Params& data) {
  toml::table root;
  try {
    root = toml::parse_file(file);
  } catch (const toml::parse_error& e) {
    throw std::runtime_error(file + ": " + std::string(e.description()));
  }
  const toml::table* t = root["base"]["data"].as_table();
  if (!t) t = root["data"].as_table();
  if (!t) throw std::runtime_error(file + ": no [base.data] or [data] table");
  if (auto v = (*t)["dataset"].value<std::string>()) data.set("dataset", *v);
  if (auto v = (*t)["path"].value<std::string>()) data.set("path", *v);
  if (auto v = (*t)["image_size"].value<std::int64_t>()) data.set("image_size", *v);
}

}  // namespace

int views(const Args& args) {
  po::options_description opts("workbench views [options]");
  std::string dataset = "fashion_mnist", path, config, recipe = "moco", out = "views.png",
              split = "train";
  std::int64_t pairs = 8, grid = 0, image_size = 0, scale = 0;
  double lambda = 0.2;
  std::uint64_t seed = 0;
  opts.add_options()("help,h", "show this help")(
      "data", po::value(&dataset), "data set: fashion_mnist | idx | cifar10 | cifar100 | folder")(
      "path", po::value(&path), "its files (default for fashion_mnist: the installed copy)")(
      "image-size", po::value(&image_size), "resize on load (0 = native)")(
      "config", po::value(&config), "take dataset, path, image_size from this run/experiment TOML")(
      "split", po::value(&split), "train | test")(
      "recipe", po::value(&recipe),
      "moco (= moco1,moco2), a preset for both views, or A,B (moco1 moco2 train eval color_only)")(
      "geometry-only", "switch colour, blur and solarize off, so matched patches look alike")(
      "pairs", po::value(&pairs), "images to draw")(
      "grid", po::value(&grid), "patch grid g (default: image size / 4, i.e. 4-pixel patches)")(
      "lambda", po::value(&lambda), "IoU threshold of a valid match (strictly greater)")(
      "seed", po::value(&seed), "loader seed (which images, which views)")(
      "scale", po::value(&scale), "upscaling factor (default: about 160 px per panel)")(
      "out", po::value(&out), "PNG file to write");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << opts
              << "\nEach row: the original with view 1's crop (red) and view 2's (blue); view 1; "
                 "view 2.\nA yellow bar on a view means it was flipped. Patches of view 1 with a "
                 "valid match\n(IoU > lambda) and their matched patch in view 2 share a colour and "
                 "a connecting line.\n";
    return 0;
  }
  if (pairs <= 0) throw std::invalid_argument("--pairs must be > 0");
  if (split != "train" && split != "test")
    throw std::invalid_argument("--split must be train or test");

  Params data("views");
  data.set("dataset", dataset);
  data.set("path", path);
  data.set("image_size", image_size);
  if (!config.empty()) read_config(config, data);
  auto ds = open_dataset(data, split == "train" ? Split::Train : Split::Test);

  std::vector<ViewRecipe> recipes = recipes_named(recipe);
  if (vm.count("geometry-only"))
    for (auto& r : recipes) r.jitter_p = r.grayscale_p = r.blur_p = r.solarize_p = 0.0;
  LoaderOptions lo;
  lo.batch_size = std::min<std::int64_t>(pairs, ds->size());
  lo.workers = 0;
  lo.seed = seed;
  lo.drop_last = false;
  Loader loader(ds, recipes, lo);
  const Batch batch = *loader.next();
  for (auto& r : recipes) r = data::resolve_recipe(r, *ds);  // the mean/std the loader used

  const std::int64_t S = recipes[0].size;
  if (recipes[1].size != S) throw std::invalid_argument("both views must have the same size");
  if (grid <= 0) grid = std::max<std::int64_t>(1, S / 4);
  const at::Tensor iou =
      box_iou(patch_boxes(batch.geometry[0], grid), patch_boxes(batch.geometry[1], grid));
  const auto [best, match] = iou.max(2);
  const at::Tensor valid = best > lambda;

  const std::int64_t side = ds->image_size();
  const std::int64_t k = scale > 0 ? scale : std::max<std::int64_t>(1, (160 + S - 1) / S);
  const std::int64_t ko = std::max<std::int64_t>(1, (S * k) / side);  // original at a similar size
  const std::int64_t gap = 12, pad = 8, bar = 4;
  const std::int64_t ow = side * ko, vw = S * k, n = batch.size();
  const std::int64_t row_h = std::max(ow, vw) + bar + pad;
  Canvas canvas(pad + ow + gap + vw + gap + vw + pad, pad + n * row_h);
  const double cell = static_cast<double>(vw) / static_cast<double>(grid);

  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t y0 = pad + i * row_h + bar;
    const std::int64_t x_orig = pad, x_v1 = pad + ow + gap, x_v2 = x_v1 + vw + gap;
    canvas.blit(ds->image(batch.index[i].item<std::int64_t>()), x_orig, y0, ko);
    const std::int64_t xs[2] = {x_v1, x_v2};
    const Rgb colours[2] = {kView1, kView2};
    for (int v = 0; v < 2; ++v) {
      canvas.blit(to_image(batch.views[v][i], recipes[v]), xs[v], y0, k);
      const at::Tensor b = batch.geometry[v].box[i];
      const double bx = b[0].item<double>(), by = b[1].item<double>();
      const double bw = b[2].item<double>(), bh = b[3].item<double>();
      canvas.rect(x_orig + std::lround(bx * ow), y0 + std::lround(by * ow),
                  x_orig + std::lround((bx + bw) * ow), y0 + std::lround((by + bh) * ow),
                  colours[v], 2);
      canvas.rect(xs[v] - 2, y0 - 2, xs[v] + vw + 2, y0 + vw + 2, colours[v], 2);
      if (batch.geometry[v].flip[i].item<bool>())
        canvas.fill(xs[v], y0 - bar - 2, xs[v] + vw, y0 - 2, kFlip);
      for (std::int64_t g = 1; g < grid; ++g) {
        const auto off = std::lround(g * cell);
        for (std::int64_t t = 0; t < vw; t += 2) {
          canvas.set(xs[v] + off, y0 + t, kGrid);
          canvas.set(xs[v] + t, y0 + off, kGrid);
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
      canvas.rect(std::lround(mx) + 1, std::lround(my) + 1, std::lround(mx + cell),
                  std::lround(my + cell), c, 2);
      canvas.rect(std::lround(qx) + 1, std::lround(qy) + 1, std::lround(qx + cell),
                  std::lround(qy + cell), c, 2);
      canvas.line(mx + cell / 2, my + cell / 2, qx + cell / 2, qy + cell / 2, c);
    }
    std::printf(
        "image %lld (label %lld): view 1 box (%.3f %.3f %.3f %.3f)%s, view 2 box "
        "(%.3f %.3f %.3f %.3f)%s, %lld of %lld patches matched\n",
        static_cast<long long>(batch.index[i].item<std::int64_t>()),
        static_cast<long long>(batch.labels[i].item<std::int64_t>()),
        batch.geometry[0].box[i][0].item<double>(), batch.geometry[0].box[i][1].item<double>(),
        batch.geometry[0].box[i][2].item<double>(), batch.geometry[0].box[i][3].item<double>(),
        batch.geometry[0].flip[i].item<bool>() ? " flipped" : "",
        batch.geometry[1].box[i][0].item<double>(), batch.geometry[1].box[i][1].item<double>(),
        batch.geometry[1].box[i][2].item<double>(), batch.geometry[1].box[i][3].item<double>(),
        batch.geometry[1].flip[i].item<bool>() ? " flipped" : "", static_cast<long long>(n_valid),
        static_cast<long long>(grid * grid));
  }
  Image img;
  img.channels = 3;
  img.width = canvas.w;
  img.height = canvas.h;
  img.pixels = std::move(canvas.px);
  data::write_png(out, img);
  std::cout << "wrote " << out << " (" << ds->describe() << ", grid " << grid << ", lambda "
            << lambda << ")\n";
  return 0;
}

}  // namespace wb::cli
