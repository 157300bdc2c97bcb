// `workbench views`: draws view pairs of a data set as the loader makes them (data/view_pairs.h).
#include <toml++/toml.h>

#include <boost/program_options.hpp>
#include <iostream>

#include "cli/cli.h"
#include "data/datasets.h"
#include "data/view_pairs.h"
#include "workbench/draw.h"

namespace wb::cli {

namespace {

namespace po = boost::program_options;

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

int verb_views(const Args& args) {
  po::options_description opts("workbench views [options]");
  std::string dataset = "fashion_mnist", path, config, recipe = "moco", out = "views.png",
              split = "train";
  std::int64_t image_size = 0;
  ViewPairsOptions o;
  opts.add_options()("help,h", "show this help")(
      "data", po::value(&dataset),
      "data set: fashion_mnist | idx | cifar10 | cifar100 | digits | folder")(
      "path", po::value(&path), "its files (default for fashion_mnist: the installed copy)")(
      "image-size", po::value(&image_size), "resize on load (0 = native)")(
      "config", po::value(&config), "take dataset, path, image_size from this run/experiment TOML")(
      "split", po::value(&split), "train | test")(
      "recipe", po::value(&recipe),
      "moco (= moco1,moco2), a preset for both views, or A,B (moco1 moco2 train eval color_only)")(
      "geometry-only", "switch colour, blur and solarize off, so matched patches look alike")(
      "pairs", po::value(&o.pairs), "images to draw")(
      "grid", po::value(&o.grid), "patch grid g (default: image size / 4, i.e. 4-pixel patches)")(
      "lambda", po::value(&o.lambda), "IoU threshold of a valid match (strictly greater)")(
      "seed", po::value(&o.seed), "loader seed (which images, which views)")(
      "scale", po::value(&o.scale), "upscaling factor (default: about 160 px per panel)")(
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

  const ViewPairs pairs = draw_view_pairs(ds, recipes, o);
  for (const auto& line : pairs.lines) std::cout << line << "\n";
  write_png(out, pairs.image);
  std::cout << "wrote " << out << " (" << ds->describe() << ", grid " << pairs.grid << ", lambda "
            << o.lambda << ")\n";
  return 0;
}

}  // namespace wb::cli
