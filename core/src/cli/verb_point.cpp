// `workbench _point DIR [--threads T] [--nproc N] [--rank R] [--plugin-path P]...`: runs one
// point in this process (run/point.h). Started by `workbench run`, one child process per point,
// or by a launcher (torchrun --no-python, srun) once per rank: then the ranks come from the
// launcher's environment (dist/rendezvous.h, docs/scale.md).
#include <boost/program_options.hpp>
#include <cstdlib>
#include <iostream>

#include "cli/cli.h"
#include "cli/run_dir_args.h"
#include "run/point.h"
#include "store/point_lock.h"

namespace wb::cli {

namespace po = boost::program_options;

int verb_point(const Args& args) {
  po::options_description opts("workbench _point DIR [options]   (internal: run one point)");
  std::string dir;
  PointOptions point;
  opts.add_options()("help,h", "show this help")("nproc", po::value(&point.nproc),
                                                 "data-parallel processes (ranks) for this point")(
      "rank", po::value(&point.rank), "internal: this process's rank (rank 0 starts the others)")(
      "threads", po::value(&point.threads),
      "intra-op threads (default: config threads, else all cores)")(
      "plugin-path", po::value(&point.plugin_paths)->composing(), "extra plugin folder or file");
  const po::variables_map vm = parse_run_dir_args(args, opts, dir);
  if (vm.count("help") || dir.empty()) {
    std::cout << opts;
    return vm.count("help") ? 0 : 2;
  }
  point.dir = dir;
  // A point started by `workbench run` (or by rank 0) takes its ranks from the command line,
  // whatever launcher variables the sweep itself inherited.
  if (!std::getenv(kParentPidVariable)) point.launcher = rendezvous_from_environment();
  return point_main(point);
}

}  // namespace wb::cli
