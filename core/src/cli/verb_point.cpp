// `workbench _point DIR [--threads T] [--plugin-path P]...`: runs one point in this process.
// Started by `workbench run` (one child process per point); owns the point's status.toml while
// it runs, its run.log and its metrics file, and calls the trainer (execute_point).
#include <ATen/Parallel.h>
#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
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

Logging make_logging(const std::filesystem::path& file, bool console_too = true) {
  auto file_sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file.string(), false);
  file_sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  console->set_pattern("[%H:%M:%S] [%^%l%$] %v");
  Logging out;
  out.log = console_too ? std::make_shared<spdlog::logger>(
                              "point", spdlog::sinks_init_list{file_sink, console})
                        : std::make_shared<spdlog::logger>("point", file_sink);
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

// Ranks 1..n-1 of a point trained by several processes: children of rank 0, in the same process
// group (so the sweep's signals reach them), each logging to <run>/rank<r>/run.log.
class Ranks {
 public:
  Ranks(const std::filesystem::path& dir, int nproc, int threads,
        const std::vector<std::string>& plugin_paths) {
    std::error_code ec;
    std::filesystem::remove(dir / "c10d.store", ec);  // a stale store would hang the rendezvous
    for (int r = 1; r < nproc; ++r) {
      std::vector<std::string> argv = {
          "/proc/self/exe",       "_point",  dir.string(),          "--rank",
          std::to_string(r),      "--nproc", std::to_string(nproc), "--threads",
          std::to_string(threads)};
      for (const auto& p : plugin_paths) {
        argv.push_back("--plugin-path");
        argv.push_back(p);
      }
      const pid_t pid = fork();
      if (pid < 0) throw std::runtime_error("cannot start rank " + std::to_string(r));
      if (pid == 0) {
        std::vector<char*> raw;
        for (auto& a : argv) raw.push_back(a.data());
        raw.push_back(nullptr);
        execv(raw[0], raw.data());
        _exit(127);
      }
      pids_.push_back(pid);
    }
  }
  // Waits for every rank; returns a message for each one that failed.
  std::vector<std::string> wait() {
    std::vector<std::string> failed;
    for (std::size_t i = 0; i < pids_.size(); ++i) {
      int status = 0;
      if (waitpid(pids_[i], &status, 0) < 0) continue;
      if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        failed.push_back("rank " + std::to_string(i + 1) + " failed (see its run.log in rank" +
                         std::to_string(i + 1) + "/)");
    }
    pids_.clear();
    return failed;
  }
  ~Ranks() {  // rank 0 failed: the others would wait for it in a collective forever
    for (pid_t pid : pids_) kill(pid, SIGTERM);
    for (pid_t pid : pids_) waitpid(pid, nullptr, 0);
  }

 private:
  std::vector<pid_t> pids_;
};

// Rank r > 0: trains alongside rank 0 in <run>/rank<r>, writes nothing else of the run.
int run_rank(const std::filesystem::path& dir, int rank, int nproc, int threads,
             const std::vector<std::string>& plugin_paths) {
  const std::filesystem::path own = dir / ("rank" + std::to_string(rank));
  std::filesystem::create_directories(own);
  Logging logging = make_logging(own / "run.log", false);
  try {
    Registry registry;
    load_plugins(registry, plugin_paths);
    const RunConfig config = load_run_config(RunPaths(dir).config, registry);
    if (threads <= 0) threads = 1;
    set_threads(threads);
    MetricsFile metrics(own / "metrics.h5");
    PointContext context;
    context.dir = own;
    context.config = &config;
    context.registry = &registry;
    context.metrics = &metrics;
    context.log = logging.log.get();
    context.threads = threads;
    context.rank = rank;
    context.world = nproc;
    context.store = dir / "c10d.store";
    execute_point(context);
    metrics.flush();
    return 0;
  } catch (const std::exception& e) {
    logging.log->error("{}", e.what());
    return 1;
  }
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
  int threads = 0, nproc = 1, rank = 0;
  std::vector<std::string> plugin_paths;
  opts.add_options()("help,h", "show this help")("nproc", po::value(&nproc),
                                                 "data-parallel processes (ranks) for this point")(
      "rank", po::value(&rank), "internal: this process's rank (rank 0 starts the others)")(
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
  if (nproc < 1 || rank < 0 || rank >= nproc)
    throw std::runtime_error("--rank must lie in [0, --nproc)");
  if (rank > 0) return run_rank(dir, rank, nproc, threads, plugin_paths);

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
    context.world = nproc;
    context.store = paths.dir / "c10d.store";
    std::unique_ptr<Ranks> ranks;
    if (nproc > 1) {
      logging.log->info("starting {} more ranks", nproc - 1);
      ranks = std::make_unique<Ranks>(paths.dir, nproc, threads, plugin_paths);
    }
    execute_point(context);
    if (ranks)
      for (const auto& message : ranks->wait()) throw std::runtime_error(message);
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
