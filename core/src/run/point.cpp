#include "run/point.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <stdexcept>

#include "config/run_config.h"
#include "eval/evaluate.h"
#include "h5/metrics.h"
#include "plugin/loader.h"
#include "process/logging.h"
#include "process/spawn.h"
#include "process/threads.h"
#include "run/progress.h"
#include "store/point_lock.h"
#include "store/run_dir.h"
#include "store/status.h"
#include "train/train_point.h"
#include "workbench/registry.h"

namespace wb {

namespace {

using Clock = std::chrono::steady_clock;

void add_unique(std::vector<std::string>& list, const std::vector<std::string>& more) {
  for (const auto& name : more)
    if (std::find(list.begin(), list.end(), name) == list.end()) list.push_back(name);
}

// Ranks 1..n-1 of a point trained by several processes: children of rank 0, in the same process
// group (so the sweep's signals reach them), each logging to <run>/rank<r>/run.log.
class Ranks {
 public:
  explicit Ranks(const PointOptions& point) {
    std::error_code ec;
    std::filesystem::remove(point.dir / "c10d.store",
                            ec);  // a stale store would hang the rendezvous
    for (int r = 1; r < point.nproc; ++r) {
      PointOptions rank = point;
      rank.rank = r;
      ProcessSpec spec;
      spec.argv = point_command("/proc/self/exe", rank);
      spec.env = {{kParentPidVariable, std::to_string(getpid())}};
      try {
        pids_.push_back(spawn_process(spec).pid);
      } catch (const std::exception& e) {
        throw std::runtime_error("cannot start rank " + std::to_string(r) + ": " + e.what());
      }
    }
  }
  // Waits for every rank; returns a message for each one that failed.
  std::vector<std::string> wait() {
    std::vector<std::string> failed;
    for (std::size_t i = 0; i < pids_.size(); ++i)
      if (!wait_process(pids_[i]).ok())
        failed.push_back("rank " + std::to_string(i + 1) + " failed (see its run.log in rank" +
                         std::to_string(i + 1) + "/)");
    pids_.clear();
    return failed;
  }
  ~Ranks() {  // rank 0 failed: the others would wait for it in a collective forever
    for (pid_t pid : pids_) kill(pid, SIGTERM);
    for (pid_t pid : pids_) wait_process(pid);
  }
  Ranks(const Ranks&) = delete;
  Ranks& operator=(const Ranks&) = delete;

 private:
  std::vector<pid_t> pids_;
};

// Shows progress on stdout and keeps run.log and status.toml's step/total current.
class Progress {
 public:
  Progress(const RunPaths& paths, RunStatus& status, spdlog::logger& file_log, double earlier)
      : paths_(paths),
        status_(status),
        file_log_(file_log),
        earlier_(earlier),
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
    status_.elapsed_seconds = earlier_ + now;  // kept if the process is killed
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
  double earlier_;
  ProgressPrinter printer_;
  Clock::time_point start_ = Clock::now();
  double last_saved_ = 0;
};

void warn_about(spdlog::logger& log, const PluginLoader& loader, const RunConfig& config) {
  for (const auto& f : loader.failures())
    log.warn("plugin library {} not loaded: {}", f.path, f.reason);
  for (const auto& note : config.migrated) log.warn("{}", note);
}

// The point's lock: the launcher's claim inherited through WB_POINT_LOCK_FD, else taken here.
// Throws when another trainer holds it.
PointLock lock_point(const std::filesystem::path& dir) {
  if (const char* fd = std::getenv(kPointLockFdVariable)) {
    const int number = std::atoi(fd);
    ::unsetenv(kPointLockFdVariable);  // not for the ranks this process starts
    return PointLock::adopt(dir, number);
  }
  PointLock lock = PointLock::try_acquire(dir);
  if (!lock.held())
    throw std::runtime_error("the point " + dir.string() + " is already being trained by " +
                             lock.holder());
  return lock;
}

// How this point's ranks meet: the launcher's rendezvous, else a file store in the run dir.
Rendezvous rendezvous_of(const PointOptions& point) {
  if (point.launcher) return *point.launcher;
  Rendezvous r;
  r.rank = r.local_rank = point.rank;
  r.world = r.local_world = point.nproc;
  r.store_file = (point.dir / "c10d.store").string();
  return r;
}

// Threads of a rank started by a launcher, which divides no cores: --threads, else the config's,
// else this machine's cores shared by the ranks on it.
int launched_threads(const PointOptions& point, int configured) {
  if (point.threads > 0) return point.threads;
  if (configured > 0) return configured;
  return std::max(1, all_cores() / std::max(1, point.launcher->local_world));
}

// Rank r > 0: trains alongside rank 0 in <run>/rank<r>, writes nothing else of the run.
int rank_main(const PointOptions& point) {
  const Rendezvous ranks = rendezvous_of(point);
  const std::filesystem::path own = point.dir / ("rank" + std::to_string(ranks.rank));
  std::filesystem::create_directories(own);
  const RunLog log = open_run_log(own / "run.log", "rank", false);
  try {
    Registry registry;
    load_plugins(registry, point.plugin_paths);
    const RunConfig config = load_run_config(RunPaths(point.dir).config, registry);
    const int threads = point.launcher ? launched_threads(point, config.settings.run.threads)
                                       : std::max(1, point.threads);
    use_threads(threads);
    MetricsFile metrics(own / "metrics.h5");
    TrainContext context;
    context.dir = own;
    context.config = &config;
    context.registry = &registry;
    context.output.metrics = &metrics;
    context.output.log = log.log.get();
    context.threads = threads;
    context.rendezvous = ranks;
    train_point(context);
    metrics.flush();
    return 0;
  } catch (const std::exception& e) {
    log.log->error("{}", e.what());
    return 1;
  }
}

// The parts of status.toml the point sets when it ends.
// `earlier`: the seconds of the attempts this one resumes from (their checkpoint).
void finish(RunStatus& status, RunState state, Clock::time_point start, double earlier) {
  status.state = state;
  status.finished = now_iso8601();
  status.elapsed_seconds = earlier + std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

// The check after prctl closes the window in which the parent died before it.
void die_with_parent() {
  const char* parent = std::getenv(kParentPidVariable);
  if (!parent) return;
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (std::to_string(getppid()) != parent) {
    std::cerr << "error: the process that started this point (pid " << parent << ") is gone\n";
    std::_Exit(1);
  }
}

std::vector<std::string> point_command(const std::string& exe, const PointOptions& options) {
  std::vector<std::string> argv = {exe,
                                   "_point",
                                   options.dir.string(),
                                   "--threads",
                                   std::to_string(options.threads),
                                   "--nproc",
                                   std::to_string(options.nproc),
                                   "--rank",
                                   std::to_string(options.rank)};
  for (const auto& p : options.plugin_paths) {
    argv.push_back("--plugin-path");
    argv.push_back(p);
  }
  return argv;
}

int point_main(const PointOptions& point) {
  if (point.threads > 0) use_threads(point.threads);
  if (point.nproc < 1 || point.rank < 0 || point.rank >= point.nproc)
    throw std::runtime_error("--rank must lie in [0, --nproc)");
  die_with_parent();
  const Rendezvous ranks = rendezvous_of(point);
  if (ranks.rank > 0) return rank_main(point);

  const auto start = Clock::now();
  const RunPaths paths(point.dir);
  if (!std::filesystem::is_directory(paths.dir))
    throw std::runtime_error("no run directory " + paths.dir.string());
  // Before anything is written: the holder's status and metrics are not ours to touch.
  const PointLock lock = lock_point(paths.dir);
  RunStatus status;
  try {
    status = read_status(paths.status);
  } catch (const std::exception&) {
    // A damaged status file is rewritten below.
  }
  RunLog log;
  double earlier = 0;  // seconds of earlier attempts this one resumes
  try {
    log = open_run_log(paths.log, "point");
    Registry registry;
    const PluginLoader loader = load_plugins(registry, point.plugin_paths);
    const RunConfig config = load_run_config(paths.config, registry);
    warn_about(*log.log, loader, config);
    const int threads = point.launcher
                            ? launched_threads(point, config.settings.run.threads)
                            : resolve_threads(point.threads, config.settings.run.threads);
    if (point.threads <= 0) use_threads(threads);

    status.state = RunState::Running;
    status.error.clear();
    status.signal.clear();
    status.exit_code = 0;
    status.pid = getpid();
    status.started = now_iso8601();
    status.finished.clear();
    // A resume continues the checkpoint's training: its time adds to the earlier attempts'.
    if (!std::filesystem::exists(paths.checkpoints / "last.pt")) status.elapsed_seconds = 0;
    earlier = status.resumed_seconds = status.elapsed_seconds;
    write_status(paths.status, status);
    log.log->info("point {} (pid {}, {} threads)", paths.dir.string(), getpid(), threads);

    MetricsFile metrics(paths.metrics);
    Progress progress(paths, status, *log.file_only, earlier);
    TrainContext context;
    context.dir = paths.dir;
    context.config = &config;
    context.registry = &registry;
    context.output.metrics = &metrics;
    context.output.log = log.log.get();
    context.output.progress = [&progress](const ProgressInfo& p) { progress(p); };
    context.threads = threads;
    context.rendezvous = ranks;
    std::unique_ptr<Ranks> children;
    if (point.launcher) {
      log.log->info("rank 0 of {} ({} on {}:{})", ranks.world, ranks.source, ranks.master_addr,
                    ranks.master_port);
    } else if (point.nproc > 1) {
      log.log->info("starting {} more ranks", point.nproc - 1);
      PointOptions others = point;
      others.threads = threads;  // as resolved here
      children = std::make_unique<Ranks>(others);
    }
    TrainedPoint trained = train_point(context);
    if (children)
      for (const auto& message : children->wait()) throw std::runtime_error(message);
    progress.end_line();

    // The ranks' weights are the same: rank 0 alone evaluates.
    Evaluation evaluation;
    evaluation.dir = paths.dir;
    evaluation.config = &config;
    evaluation.registry = &registry;
    evaluation.metrics = &metrics;
    evaluation.log = log.log.get();
    evaluation.threads = threads;
    evaluation.cache_tag = "step" + std::to_string(trained.steps);
    evaluate_point(evaluation, trained.model, trained.device);
    metrics.flush();  // here rather than in the destructor, so that a failure is reported

    finish(status, RunState::Done, start, earlier);
    add_unique(status.evaluators_done, evaluator_names(config));
    write_status(paths.status, status);
    log.log->info("done in {:.1f} s", status.elapsed_seconds);
    return 0;
  } catch (const std::exception& e) {
    if (log.log)
      log.log->error("{}", e.what());
    else
      std::cerr << "error: " << e.what() << "\n";
    status.error = status_error(e.what());
    finish(status, RunState::Failed, start, earlier);
    try {
      write_status(paths.status, status);
    } catch (const std::exception& e2) {
      std::cerr << "error: " << e2.what() << "\n";  // the parent records the exit code instead
    }
    return 1;
  }
}

}  // namespace wb
