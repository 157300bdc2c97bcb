// `workbench _point DIR [--threads T] [--plugin-path P]...`: runs one point in this process.
// Started by `workbench run` (one child process per point); owns the point's status.toml while
// it runs, its run.log and its metrics file, and calls the trainer (execute_point).
#include <ATen/Parallel.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "cli/cli.h"
#include "h5/metrics.h"
#include "plugin/loader.h"
#include "store/progress.h"
#include "store/run_dir.h"
#include "store/status.h"
#include "train/execute.h"
#include "workbench/registry.h"

namespace wb::cli {

namespace po = boost::program_options;

namespace {

using Clock = std::chrono::steady_clock;

// Before anything else touches LibTorch: its default here is one thread (platform.md).
void set_threads(int threads) {
  setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);  // for what starts later
  at::set_num_threads(threads);
}

// Logs to run.log (everything, flushed at each line: the process may be killed) and to the
// console. The file-only logger takes the progress lines the console already shows.
struct Logging {
  std::shared_ptr<spdlog::logger> log, file_only;
};

Logging make_logging(const std::filesystem::path& file) {
  auto file_sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file.string(), false);
  file_sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  console->set_pattern("[%H:%M:%S] [%^%l%$] %v");
  Logging out;
  out.log = std::make_shared<spdlog::logger>("point", spdlog::sinks_init_list{file_sink, console});
  out.file_only = std::make_shared<spdlog::logger>("progress", file_sink);
  for (auto* l : {out.log.get(), out.file_only.get()}) {
    l->set_level(spdlog::level::debug);
    l->flush_on(spdlog::level::debug);
  }
  spdlog::set_default_logger(out.log);  // code that logs through spdlog:: lands here too
  return out;
}

void add_unique(std::vector<std::string>& list, const std::vector<std::string>& more) {
  for (const auto& name : more)
    if (std::find(list.begin(), list.end(), name) == list.end()) list.push_back(name);
}

// Shows progress on stdout and keeps run.log and status.toml's step/total current.
class Progress {
 public:
  Progress(const RunPaths& paths, RunStatus& status, spdlog::logger& file_log)
      : paths_(paths),
        status_(status),
        file_log_(file_log),
        printer_(stdout, isatty(STDOUT_FILENO) != 0, isatty(STDOUT_FILENO) ? 0.5 : 5.0) {}

  void operator()(const ProgressInfo& p) {
    const double now = std::chrono::duration<double>(Clock::now() - start_).count();
    const bool last = p.total_steps > 0 && p.step >= p.total_steps;
    const std::string line =
        format_progress(p.epoch, p.step, p.total_steps, p.loss, p.images_per_second, p.eta_seconds);
    printer_.update(line, now, last);
    if (!last && now - last_saved_ < 5.0) return;
    last_saved_ = now;
    file_log_.info("{}", line);
    status_.step = p.step;
    status_.total_steps = p.total_steps;
    try {
      write_status(paths_.status, status_);
    } catch (const std::exception& e) {
      file_log_.warn("{}", e.what());  // progress bookkeeping must not stop training
    }
  }
  void end_line() { printer_.end_line(); }

 private:
  const RunPaths& paths_;
  RunStatus& status_;
  spdlog::logger& file_log_;
  ProgressPrinter printer_;
  Clock::time_point start_ = Clock::now();
  double last_saved_ = 0;
};

}  // namespace

int run_point(const Args& args) {
  po::options_description opts("workbench _point DIR [options]   (internal: run one point)");
  std::string dir;
  int threads = 0;
  std::vector<std::string> plugin_paths;
  opts.add_options()("help,h", "show this help")(
      "threads", po::value(&threads), "intra-op threads (default: config threads, else all cores)")(
      "plugin-path", po::value(&plugin_paths)->composing(), "extra plugin folder or file");
  po::options_description hidden;
  hidden.add_options()("dir", po::value(&dir), "the run directory");
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description positional;
  positional.add("dir", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
  po::notify(vm);
  if (vm.count("help") || dir.empty()) {
    std::cout << opts;
    return vm.count("help") ? 0 : 2;
  }
  if (threads > 0) set_threads(threads);

  const auto start = Clock::now();
  const RunPaths paths(dir);
  if (!std::filesystem::is_directory(paths.dir))
    throw std::runtime_error("no run directory " + paths.dir.string());
  RunStatus status;
  try {
    status = read_status(paths.status);
  } catch (const std::exception&) {
    // A damaged status file is rewritten below.
  }
  Logging logging;
  try {
    logging = make_logging(paths.log);
    Registry registry;
    const PluginLoader loader = load_plugins(registry, plugin_paths);
    for (const auto& f : loader.failures())
      logging.log->warn("plugin library {} not loaded: {}", f.path, f.reason);
    const RunConfig config = load_run_config(paths.config, registry);
    if (threads <= 0) {
      threads = config.run.has("threads") ? static_cast<int>(config.run.integer("threads")) : 0;
      if (threads <= 0)
        threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
      set_threads(threads);
    }

    status.state = RunState::Running;
    status.error.clear();
    status.signal.clear();
    status.exit_code = 0;
    status.pid = getpid();
    status.started = now_iso8601();
    status.finished.clear();
    status.elapsed_seconds = 0;
    write_status(paths.status, status);
    logging.log->info("point {} (pid {}, {} threads)", paths.dir.string(), getpid(), threads);

    MetricsFile metrics(paths.metrics);
    Progress progress(paths, status, *logging.file_only);
    PointContext context;
    context.dir = paths.dir;
    context.config = &config;
    context.registry = &registry;
    context.metrics = &metrics;
    context.log = logging.log.get();
    context.progress = [&progress](const ProgressInfo& p) { progress(p); };
    context.threads = threads;
    execute_point(context);
    progress.end_line();
    metrics.flush();  // here rather than in the destructor, so that a failure is reported

    status.state = RunState::Done;
    status.finished = now_iso8601();
    status.elapsed_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    add_unique(status.evaluators_done, evaluator_names(config));
    write_status(paths.status, status);
    logging.log->info("done in {:.1f} s", status.elapsed_seconds);
    return 0;
  } catch (const std::exception& e) {
    if (logging.log)
      logging.log->error("{}", e.what());
    else
      std::cerr << "error: " << e.what() << "\n";
    status.state = RunState::Failed;
    status.error = e.what();
    status.finished = now_iso8601();
    status.elapsed_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    try {
      write_status(paths.status, status);
    } catch (const std::exception& e2) {
      std::cerr << "error: " << e2.what() << "\n";  // the parent records the exit code instead
    }
    return 1;
  }
}

}  // namespace wb::cli
