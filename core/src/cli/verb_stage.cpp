// `workbench _stage DIR [--threads T] [--plugin-path P]...`: runs one cluster or deploy point of
// an experiment's stages in this process (run/stage.h). Started by `workbench run`.
#include <boost/program_options.hpp>
#include <iostream>

#include "cli/cli.h"
#include "cli/run_dir_args.h"
#include "run/stage.h"

namespace wb::cli {

namespace po = boost::program_options;

int verb_stage(const Args& args) {
  po::options_description opts("workbench _stage DIR [options]   (internal: run one stage point)");
  std::string dir;
  PointOptions point;
  opts.add_options()("help,h", "show this help")(
      "threads", po::value(&point.threads),
      "intra-op threads (default: config threads, else all cores)")(
      "plugin-path", po::value(&point.plugin_paths)->composing(), "extra plugin folder or file");
  const po::variables_map vm = parse_run_dir_args(args, opts, dir);
  if (vm.count("help") || dir.empty()) {
    std::cout << opts;
    return vm.count("help") ? 0 : 2;
  }
  point.dir = dir;
  return stage_main(point, std::cerr);
}

}  // namespace wb::cli
