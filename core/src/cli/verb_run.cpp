// `workbench run FILE.toml`: expands and validates an experiment, then runs every point that
// still needs work (run/sweep.h).
#include <boost/program_options.hpp>
#include <iostream>

#include "cli/cli.h"
#include "config/experiment.h"
#include "plugin/loader.h"
#include "report/settings.h"
#include "run/host_environment.h"
#include "run/sweep.h"
#include "workbench/registry.h"

namespace wb::cli {

namespace po = boost::program_options;

int verb_run(const Args& args) {
  po::options_description opts("workbench run FILE.toml [options]");
  std::string file, profile, only, shard, runs_dir = "runs";
  std::vector<std::string> sets;
  SweepSettings sweep;
  opts.add_options()("help,h", "show this help")("set", po::value(&sets)->composing(),
                                                 "key=value: override a [base] key (repeatable)")(
      "profile", po::value(&profile), "apply [profile.NAME] first")(
      "dry-run", "print the points and exit")("jobs,j", po::value(&sweep.jobs),
                                              "points run at once (default 1)")(
      "threads", po::value(&sweep.threads),
      "CPU threads in all, split between the jobs (default: all cores)")(
      "nproc", po::value(&sweep.nproc),
      "processes per point (data-parallel ranks through c10d: Gloo on CPU, NCCL on GPU)")(
      "fail-fast", "start no new point once one has failed")(
      "runs-dir", po::value(&runs_dir), "where run directories go (default: runs)")(
      "plugin-path", po::value(&sweep.plugin_paths)->composing(),
      "extra plugin folder or file (repeatable)")(
      "only", po::value(&only), "run only the point with this id (or unique id prefix)")(
      "shard", po::value(&shard),
      "I/N: run only the points i with i mod N == I (one job of an array)")(
      "prepare", "write the points' directories and print them, train nothing (for torchrun/srun)")(
      "no-report", "do not write the report (runs/<experiment>/report) at the end");
  po::options_description hidden;
  hidden.add_options()("file", po::value(&file), "the experiment file");
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description positional;
  positional.add("file", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
  po::notify(vm);
  if (vm.count("help") || file.empty()) {
    (file.empty() && !vm.count("help") ? std::cerr : std::cout) << opts;
    return vm.count("help") ? 0 : 2;
  }
  if (sweep.jobs < 1) throw std::runtime_error("--jobs must be at least 1");
  if (sweep.nproc < 1) throw std::runtime_error("--nproc must be at least 1");
  sweep.runs_dir = runs_dir;
  sweep.fail_fast = vm.count("fail-fast") > 0;
  sweep.report = vm.count("no-report") == 0;

  Registry registry;
  const PluginLoader loader = load_plugins(registry, sweep.plugin_paths);
  for (const auto& f : loader.failures())
    std::cerr << "warning: plugin library " << f.path << " not loaded: " << f.reason << "\n";
  Experiment experiment;
  try {
    ExperimentOptions options;
    options.overrides = sets;
    options.profile = profile;
    options.environment = host_environment();
    // --prepare writes points that torchrun or srun start on other hosts: this host's lack of
    // a GPU says nothing about theirs.
    if (vm.count("prepare")) options.environment.has_cuda = nullptr;
    options.runs_dir = runs_dir;
    experiment = load_experiment(file, registry, options);
    parse_experiment_header(experiment.source, file);  // a bad [report] fails now, not after
  } catch (const ConfigError& e) {
    std::cerr << e.what() << "\n";  // already "file:line:column: message"
    return 2;
  }
  if (!only.empty()) keep_only_point(experiment, only);
  if (!shard.empty()) keep_shard(experiment, shard);
  if (vm.count("prepare")) {
    prepare_experiment(experiment, runs_dir, std::cout, std::cerr);
    return 0;
  }
  if (vm.count("dry-run")) {
    std::cout << format_points_table(experiment);
    return 0;
  }
  return run_experiment(experiment, sweep, std::cout, std::cerr);
}

}  // namespace wb::cli
