// `workbench eval RUN_DIR [--evaluator NAME]... [--add TABLE]... [--force] [--threads N]
// [--plugin-path P]...`: evaluates a run's last checkpoint again (eval/on_demand.h).
#include <boost/program_options.hpp>
#include <iostream>

#include "cli/cli.h"
#include "cli/run_dir_args.h"
#include "eval/on_demand.h"

namespace wb::cli {

namespace po = boost::program_options;

int verb_eval(const Args& args) {
  po::options_description opts("workbench eval RUN_DIR [options]");
  std::string dir;
  EvaluationRequest request;
  opts.add_options()("help,h", "show this help")(
      "evaluator", po::value(&request.only)->composing(),
      "run only this evaluator of the run (its name in metrics.h5: knn, knn_2, ...; repeatable)")(
      "add", po::value(&request.additions)->composing(),
      "run an extra evaluator given as a TOML inline table, e.g. "
      "'{ plugin = \"knn\", k = 10 }' (repeatable); it is appended to config.toml")(
      "force", "rerun evaluators whose results are already in metrics.h5")(
      "threads", po::value(&request.threads),
      "intra-op threads (default: config threads, else all cores)")(
      "plugin-path", po::value(&request.plugin_paths)->composing(), "extra plugin folder or file");
  const po::variables_map vm = parse_run_dir_args(args, opts, dir);
  if (vm.count("help") || dir.empty()) {
    (vm.count("help") ? std::cout : std::cerr)
        << opts
        << "\nWithout --evaluator/--add: every evaluator of the run whose results are missing.\n";
    return vm.count("help") ? 0 : 2;
  }
  request.dir = dir;
  request.force = vm.count("force") > 0;
  return evaluate_on_demand(request, std::cerr);
}

}  // namespace wb::cli
