// `workbench run FILE.toml`: expands and validates an experiment, then runs every point that
// still needs work as a child process (`workbench _point DIR`), --jobs at a time.
#include <algorithm>
#include <boost/program_options.hpp>
#include <filesystem>
#include <iostream>
#include <thread>

#include "cli/cli.h"
#include "config/experiment.h"
#include "plugin/loader.h"
#include "report/report.h"
#include "report/settings.h"
#include "store/run_dir.h"
#include "store/sweep.h"
#include "workbench/registry.h"

namespace wb::cli {

namespace po = boost::program_options;

namespace {

// Keeps only the point `only` names: its full id or a prefix matching exactly one point.
void select_point(Experiment& experiment, const std::string& only) {
  std::vector<Point> matches;
  for (const auto& p : experiment.points)
    if (p.id == only || p.id.rfind(only, 0) == 0) matches.push_back(p);
  if (matches.size() != 1) {
    std::string ids;
    for (const auto& p : experiment.points) ids += (ids.empty() ? "" : ", ") + p.id;
    throw std::runtime_error("--only " + only + ": " +
                             (matches.empty() ? "no point has this id" : "several points match") +
                             " (ids: " + ids + ")");
  }
  experiment.points = std::move(matches);
}

// The report of the experiment directory after a sweep: a problem is a warning, never a
// failure of the run.
void write_run_report(const std::filesystem::path& exp_dir) {
  try {
    const ReportResult result = write_report({exp_dir});
    for (const auto& w : result.warnings) std::cerr << "warning: report: " << w << "\n";
    if (!result.plot_error.empty()) std::cerr << "warning: report: " << result.plot_error << "\n";
    std::cout << "report: " << (result.dir / "index.html").string() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "warning: report not written: " << e.what() << "\n";
  }
}

// Intra-op threads of each point: the config's own `threads`, else the total split between the
// points that run at once.
int point_threads(const Point& point, int total, int at_once) {
  const Params& run = point.config.run;
  if (run.has("threads") && run.integer("threads") > 0)
    return static_cast<int>(run.integer("threads"));
  return std::max(1, total / std::max(1, at_once));
}

}  // namespace

int run(const Args& args) {
  po::options_description opts("workbench run FILE.toml [options]");
  std::string file, profile, only, runs_dir = "runs";
  std::vector<std::string> sets, plugin_paths;
  int jobs = 1, threads = 0, nproc = 1;
  opts.add_options()("help,h", "show this help")("set", po::value(&sets)->composing(),
                                                 "key=value: override a [base] key (repeatable)")(
      "profile", po::value(&profile), "apply [profile.NAME] first")(
      "dry-run", "print the points and exit")("jobs,j", po::value(&jobs),
                                              "points run at once (default 1)")(
      "threads", po::value(&threads),
      "CPU threads in all, split between the jobs (default: all cores)")(
      "nproc", po::value(&nproc),
      "processes per point (data-parallel ranks through c10d: Gloo on CPU, NCCL on GPU)")(
      "fail-fast", "start no new point once one has failed")(
      "runs-dir", po::value(&runs_dir), "where run directories go (default: runs)")(
      "plugin-path", po::value(&plugin_paths)->composing(),
      "extra plugin folder or file (repeatable)")(
      "only", po::value(&only), "run only the point with this id (or unique id prefix)")(
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
  if (jobs < 1) throw std::runtime_error("--jobs must be at least 1");
  if (nproc < 1) throw std::runtime_error("--nproc must be at least 1");

  Registry registry;
  const PluginLoader loader = load_plugins(registry, plugin_paths);
  for (const auto& f : loader.failures())
    std::cerr << "warning: plugin library " << f.path << " not loaded: " << f.reason << "\n";

  Experiment experiment;
  try {
    experiment = load_experiment(file, registry, {sets, profile});
    parse_experiment_header(experiment.source, file);  // a bad [report] fails now, not after
  } catch (const ConfigError& e) {
    std::cerr << e.what() << "\n";  // already "file:line:column: message"
    return 2;
  }
  if (!only.empty()) select_point(experiment, only);
  if (vm.count("dry-run")) {
    std::cout << format_points_table(experiment);
    return 0;
  }

  const std::filesystem::path root = std::filesystem::absolute(runs_dir);
  const std::filesystem::path exp_dir = experiment_dir(root, experiment.name);
  write_experiment_copy(root, experiment);

  // Points already complete are reported and skipped; the others get their directory.
  std::vector<SweepOutcome> outcomes;  // every point, in order
  std::vector<std::size_t> to_run;     // indices into experiment.points
  for (std::size_t i = 0; i < experiment.points.size(); ++i) {
    const Point& point = experiment.points[i];
    const RunPaths paths(exp_dir / point.id);
    RunStatus status;
    try {
      status = read_status(paths.status);
    } catch (const std::exception& e) {
      std::cerr << "warning: " << e.what() << " (running the point again)\n";
    }
    if (point_complete(status, point.config)) {
      std::cout << "skip " << point.id << "  " << point.label << "  (done)\n";
      outcomes.push_back({point.id, point.label, RunState::Done, "", status.elapsed_seconds, true});
      continue;
    }
    prepare_point_dir(paths.dir, experiment, point);
    outcomes.push_back({point.id, point.label, RunState::Queued, "", 0, false});
    to_run.push_back(i);
  }

  const int total_threads =
      threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int at_once =
      static_cast<int>(std::min<std::size_t>(jobs, std::max<std::size_t>(1, to_run.size())));
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  std::vector<SweepItem> items;
  for (std::size_t i : to_run) {
    const Point& point = experiment.points[i];
    const int t = point_threads(point, total_threads, at_once);
    SweepItem item{point.id, point.label, exp_dir / point.id, {}};
    item.command.name = point.id.substr(0, 6);
    // The point's threads are shared by its ranks.
    const int per_rank = std::max(1, t / std::max(1, nproc));
    item.command.argv = {exe,
                         "_point",
                         item.dir.string(),
                         "--threads",
                         std::to_string(per_rank),
                         "--nproc",
                         std::to_string(nproc)};
    for (const auto& p : plugin_paths) {
      item.command.argv.push_back("--plugin-path");
      item.command.argv.push_back(std::filesystem::absolute(p).string());
    }
    item.command.env = {{"OMP_NUM_THREADS", std::to_string(per_rank)}};
    items.push_back(std::move(item));
  }
  std::cout << experiment.name << ": " << experiment.points.size() << " points, " << items.size()
            << " to run, " << at_once << " at once, " << total_threads << " threads\n"
            << std::flush;

  SweepOptions options;
  options.jobs = jobs;
  options.fail_fast = vm.count("fail-fast") > 0;
  options.prefix_output = jobs > 1;
  options.forward_signals = true;
  options.messages = &std::cout;
  const SweepReport report = run_sweep(items, options);
  for (std::size_t k = 0; k < to_run.size(); ++k) {
    SweepOutcome& outcome = outcomes[to_run[k]];
    outcome = report.outcomes[k];
    if (report.interrupted && outcome.state == RunState::Queued) outcome.error = "interrupted";
  }

  std::cout << "\n" << format_summary(outcomes);
  if (!vm.count("no-report") && !report.interrupted) write_run_report(exp_dir);
  const int failed = static_cast<int>(std::count_if(
      outcomes.begin(), outcomes.end(), [](const auto& o) { return o.state == RunState::Failed; }));
  if (report.interrupted) {
    std::cout << "interrupted\n";
    return 130;
  }
  if (failed > 0) {
    std::cout << failed << " of " << outcomes.size() << " points failed (see their run.log)\n";
    return 1;
  }
  return 0;
}

}  // namespace wb::cli
