// `workbench export RUN_DIR [--out DIR] [--momentum] [--heads] [--samples N] [--threads N]
// [--plugin-path P]...`: writes the run's trained backbone as backbone.pt (torch.load) and
// backbone.safetensors with timm's names for a ViT, and backbone.json naming the architecture
// (docs/export.md).
#include <ATen/Parallel.h>

#include <boost/program_options.hpp>
#include <iostream>
#include <thread>

#include "cli/cli.h"
#include "cli/run_dir_args.h"
#include "plugin/loader.h"
#include "weights/export.h"
#include "workbench/registry.h"

namespace wb::cli {

namespace po = boost::program_options;

int verb_export(const Args& args) {
  po::options_description opts("workbench export RUN_DIR [options]");
  std::string dir, out;
  std::vector<std::string> plugin_paths;
  std::int64_t samples = 0;
  int threads = 0;
  opts.add_options()("help,h", "show this help")("out", po::value(&out),
                                                 "output folder (default: RUN_DIR/export)")(
      "momentum", "also write the momentum encoder (momentum.pt, momentum.safetensors)")(
      "heads", "also write the losses' heads, e.g. MoCo's projector and predictor (heads.*)")(
      "samples", po::value(&samples),
      "also write the first N test images as the model sees them and their CLS features "
      "(samples.*), to check a rebuilt model")("threads", po::value(&threads),
                                               "intra-op threads (default: all cores)")(
      "plugin-path", po::value(&plugin_paths)->composing(), "extra plugin folder or file");
  const po::variables_map vm = parse_run_dir_args(args, opts, dir);
  if (vm.count("help") || dir.empty()) {
    (vm.count("help") ? std::cout : std::cerr) << opts;
    return vm.count("help") ? 0 : 2;
  }
  if (samples < 0) {
    std::cerr << "error: --samples must be at least 0\n";
    return 2;
  }
  at::set_num_threads(
      threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));

  Registry registry;
  const PluginLoader loader = load_plugins(registry, plugin_paths);
  for (const auto& f : loader.failures())
    std::cerr << "warning: plugin library " << f.path << " not loaded: " << f.reason << "\n";
  ExportOptions options;
  options.out = out;
  options.momentum = vm.count("momentum") > 0;
  options.heads = vm.count("heads") > 0;
  options.samples = samples;
  const ExportResult result = export_run(dir, registry, options);
  std::cout << "exported step " << result.step << " of " << dir << " with "
            << (result.timm_names ? "timm's" : "the workbench's") << " weight names:\n";
  for (const auto& f : result.files) std::cout << "  " << f.string() << "\n";
  return 0;
}

}  // namespace wb::cli
