// `workbench deploy RUN_DIR --data NAME [options]`: one expert path of a MoCE run as a dense
// run directory (cluster/deploy.h).
#include <boost/program_options.hpp>
#include <iostream>

#include "cli/cli.h"
#include "cli/run_dir_args.h"
#include "cluster/deploy.h"

namespace wb::cli {

namespace po = boost::program_options;

int verb_deploy(const Args& args) {
  po::options_description opts("workbench deploy RUN_DIR --data NAME [options]");
  std::string dir, out;
  DeployRequest request;
  opts.add_options()("help,h", "show this help")(
      "data", po::value(&request.data),
      "the downstream set: a [datasets.<name>] of the run (its training split is embedded)")(
      "out", po::value(&out), "the dense run directory to write (default RUN_DIR-deploy-NAME)")(
      "no-fold-gate",
      "keep the expert as trained instead of folding the gate's combine weight into it")(
      "threads", po::value(&request.threads),
      "intra-op threads (default: config threads, else all cores)")(
      "plugin-path", po::value(&request.plugin_paths)->composing(), "extra plugin folder or file");
  const po::variables_map vm = parse_run_dir_args(args, opts, dir);
  if (vm.count("help") || dir.empty() || request.data.empty()) {
    (vm.count("help") ? std::cout : std::cerr)
        << opts
        << "\nEmbeds the downstream set with the clustering's features, takes the cluster "
           "holding most of its images and writes the experts that cluster is routed to as a "
           "dense backbone (docs/moce.md).\n";
    return vm.count("help") ? 0 : 2;
  }
  request.dir = dir;
  request.out = out;
  request.fold_gate = vm.count("no-fold-gate") == 0;
  return deploy_run(request, std::cerr);
}

}  // namespace wb::cli
