#include "run/sweep.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include <unistd.h>

#include "process/threads.h"
#include "report/report.h"
#include "run/point.h"
#include "run/stage.h"
#include "store/point_lock.h"
#include "store/run_dir.h"

namespace wb {

namespace {

// A status file that cannot be parsed must not stop the sweep: start from a fresh one.
RunStatus read_status_or_fresh(const std::filesystem::path& file, std::ostream* messages) {
  try {
    return read_status(file);
  } catch (const std::exception& e) {
    if (messages) *messages << "warning: " << e.what() << " (rewriting it)\n";
    return RunStatus{};
  }
}

}  // namespace

int SweepReport::failed() const {
  return static_cast<int>(std::count_if(outcomes.begin(), outcomes.end(),
                                        [](const auto& o) { return o.state == RunState::Failed; }));
}

RunStatus record_result(const std::filesystem::path& status_file, const CommandResult& result) {
  RunStatus status = read_status_or_fresh(status_file, nullptr);
  const bool child_wrote_error = status.state == RunState::Failed && !status.error.empty();
  if (result.pid != 0 && status.pid == 0) status.pid = result.pid;
  status.signal.clear();
  status.exit_code = 0;

  if (!result.started) {
    status.state = RunState::Failed;
    status.error = "could not start: " + result.start_error;
  } else if (result.ok()) {
    status.state = RunState::Done;  // exit 0 is the child's promise that the point is done
    status.error.clear();
  } else {
    status.state = RunState::Failed;
    status.exit_code = result.exit_code;
    if (result.signal != 0) status.signal = signal_name(result.signal);
    if (result.interrupted)
      status.error = "interrupted";
    else if (result.signal != 0)
      status.error = "killed by " + status.signal;
    else if (!child_wrote_error)
      status.error = "exited with code " + std::to_string(result.exit_code);
  }
  // The parent's wall time includes the child's start-up (loading LibTorch and plugins): it is
  // what the point cost, and it is known however the child ended. The attempts the child
  // resumed from count too.
  if (result.started) {
    status.elapsed_seconds = status.resumed_seconds + result.seconds;
    if (status.started.empty())
      status.started = iso8601(std::time(nullptr) - static_cast<std::time_t>(result.seconds));
  }
  status.finished = now_iso8601();
  write_status(status_file, status);
  return status;
}

SweepReport run_sweep(const std::vector<SweepItem>& items, const SweepOptions& options) {
  SweepReport report;
  std::vector<Command> commands;
  auto mark_queued = [&](const RunPaths& paths) {
    const RunStatus before = read_status_or_fresh(paths.status, options.messages);
    RunStatus queued;
    queued.evaluators_done = before.evaluators_done;
    // The point decides when it starts whether it resumes (and adds) the earlier seconds.
    queued.elapsed_seconds = before.elapsed_seconds;
    write_status(paths.status, queued);
  };
  for (const auto& item : items) {
    // A point another trainer holds keeps its status: only its holder writes it.
    if (PointLock lock = PointLock::try_acquire(item.dir); lock.held())
      mark_queued(RunPaths(item.dir));
    report.outcomes.push_back({item.id, item.label, RunState::Queued, "", 0, false, ""});
    commands.push_back(item.command);
    commands.back().env.emplace_back(kPointLockFdVariable, "3");
    commands.back().env.emplace_back(kParentPidVariable, std::to_string(::getpid()));
  }

  SchedulerOptions scheduler;
  scheduler.jobs = options.jobs;
  scheduler.fail_fast = options.fail_fast;
  scheduler.prefix_output = options.prefix_output;
  scheduler.forward_signals = options.forward_signals;
  scheduler.out = options.out;
  scheduler.err = options.err;
  scheduler.claim = [&](std::size_t index, int* pass_fd) {
    const SweepItem& item = items[index];
    SweepOutcome& outcome = report.outcomes[index];
    PointLock lock = PointLock::try_acquire(item.dir);
    const RunPaths paths(item.dir);
    if (!lock.held()) {
      outcome.elsewhere = lock.holder();
      if (options.messages)
        *options.messages << "skip " << item.id << "  " << item.label << "  (trained by "
                          << outcome.elsewhere << ")\n"
                          << std::flush;
      return false;
    }
    if (item.complete && item.complete(read_status_or_fresh(paths.status, nullptr))) {
      outcome.elsewhere = "another trainer";
      if (options.messages)
        *options.messages << "skip " << item.id << "  " << item.label
                          << "  (done by another trainer)\n"
                          << std::flush;
      return false;
    }
    mark_queued(paths);
    *pass_fd = lock.take_fd();
    return true;
  };
  scheduler.on_start = [&](std::size_t index, pid_t pid) {
    if (options.messages)
      *options.messages << "start " << items[index].id << "  " << items[index].label << "  (pid "
                        << pid << ")\n"
                        << std::flush;
  };
  scheduler.on_finish = [&](std::size_t index, const CommandResult& result) {
    SweepOutcome& outcome = report.outcomes[index];
    // Recorded under the point's lock: once our child is gone, another launcher may have
    // claimed the point again, and then its status is no longer ours to write.
    const RunPaths paths(items[index].dir);
    const PointLock lock = PointLock::try_acquire(paths.dir);
    if (!lock.held()) outcome.elsewhere = lock.holder();
    const RunStatus status = lock.held() ? record_result(paths.status, result)
                                         : read_status_or_fresh(paths.status, nullptr);
    outcome.state = status.state;
    outcome.error = status.error;
    outcome.seconds = status.elapsed_seconds;
    if (options.messages)
      *options.messages << state_name(status.state) << " " << items[index].id << "  "
                        << items[index].label << "  " << format_duration(status.elapsed_seconds)
                        << (status.error.empty() ? "" : "  " + status.error) << "\n"
                        << std::flush;
  };
  report.interrupted = schedule_commands(commands, scheduler).interrupted;
  for (std::size_t i = 0; i < items.size(); ++i) {  // where the others' points stand now
    SweepOutcome& outcome = report.outcomes[i];
    if (outcome.elsewhere.empty()) continue;
    const RunStatus status = read_status_or_fresh(RunPaths(items[i].dir).status, nullptr);
    outcome.state = status.state;
    outcome.error = status.error;
    outcome.seconds = status.elapsed_seconds;
  }
  return report;
}

namespace {

// The points of a sweep: every point's outcome so far (skipped ones are final) and the items
// that still need a run.
struct SweepPlan {
  std::vector<SweepOutcome> outcomes;  // every point, in order
  std::vector<std::size_t> to_run;     // indices into outcomes (and the experiment's points)
  std::vector<SweepItem> items;        // one per to_run entry
  int at_once = 1, total_threads = 1;
};

// Whether a point needs no more work. A stage's cluster or deploy point is done when its
// `workbench _stage` ended well (its evaluators are part of that).
bool complete(const Point& point, const RunStatus& status) {
  if (point.kind != "train") return status.state == RunState::Done;
  return point_complete(status, point.config);
}

SweepPlan plan_sweep(const Experiment& experiment, const std::vector<Point>& points,
                     const std::filesystem::path& exp_dir, const SweepSettings& settings,
                     std::ostream& out, std::ostream& err) {
  SweepPlan plan;
  for (std::size_t i = 0; i < points.size(); ++i) {
    const Point& point = points[i];
    const RunPaths paths(exp_dir / point.id);
    RunStatus status;
    try {
      status = read_status(paths.status);
    } catch (const std::exception& e) {
      err << "warning: " << e.what() << " (running the point again)\n";
    }
    if (complete(point, status)) {
      out << "skip " << point.id << "  " << point.label << "  (done)\n";
      plan.outcomes.push_back(
          {point.id, point.label, RunState::Done, "", status.elapsed_seconds, true, ""});
      continue;
    }
    prepare_point_dir(paths.dir, experiment, point);
    plan.outcomes.push_back({point.id, point.label, RunState::Queued, "", 0, false, ""});
    plan.to_run.push_back(i);
  }

  plan.total_threads = settings.threads > 0 ? settings.threads : all_cores();
  plan.at_once =
      static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(std::max(1, settings.jobs)),
                                             std::max<std::size_t>(1, plan.to_run.size())));
  const std::string exe = settings.exe.empty()
                              ? std::filesystem::read_symlink("/proc/self/exe").string()
                              : settings.exe;
  for (std::size_t i : plan.to_run) {
    const Point& point = points[i];
    PointOptions options;
    options.dir = exp_dir / point.id;
    options.nproc = settings.nproc;
    // The point's threads are shared by its ranks.
    const int threads =
        threads_per_point(point.config.settings.run.threads, plan.total_threads, plan.at_once);
    options.threads = std::max(1, threads / std::max(1, settings.nproc));
    for (const auto& p : settings.plugin_paths)
      options.plugin_paths.push_back(std::filesystem::absolute(p).string());
    SweepItem item{point.id, point.label, options.dir, {}, {}};
    const Point* kept = &point;
    item.complete = [kept](const RunStatus& status) { return complete(*kept, status); };
    item.command.name = point.id.substr(0, 6);
    item.command.argv =
        point.kind == "train" ? point_command(exe, options) : stage_command(exe, options);
    item.command.env = {{"OMP_NUM_THREADS", std::to_string(options.threads)}};
    plan.items.push_back(std::move(item));
  }
  return plan;
}

// The report of the experiment directory after a sweep: a problem is a warning, never a
// failure of the run.
void write_sweep_report(const std::filesystem::path& exp_dir, std::ostream& out,
                        std::ostream& err) {
  try {
    const ReportResult result = write_report({exp_dir});
    for (const auto& w : result.warnings) err << "warning: report: " << w << "\n";
    if (!result.plot_error.empty()) err << "warning: report: " << result.plot_error << "\n";
    out << "report: " << (result.dir / "index.html").string() << "\n";
  } catch (const std::exception& e) {
    err << "warning: report not written: " << e.what() << "\n";
  }
}

}  // namespace

void prepare_experiment(const Experiment& experiment, const std::filesystem::path& runs_dir,
                        std::ostream& out, std::ostream& err) {
  const std::filesystem::path root = std::filesystem::absolute(runs_dir);
  const std::filesystem::path exp_dir = experiment_dir(root, experiment.name);
  write_experiment_copy(root, experiment);
  for (const Point& point : experiment.points) {
    if (point.kind != "train") {
      err << "skip " << point.id << "  " << point.label << "  (stage " << point.stage << ": a "
          << point.kind << " point, which 'workbench _point' cannot run; run it with 'workbench "
          << "run " << experiment.file << " --runs-dir " << runs_dir.string() << " --only "
          << point.id << "')\n";
      continue;
    }
    prepare_point_dir(exp_dir / point.id, experiment, point);
    out << (exp_dir / point.id).string() << "\n";
    if (!point.needs.empty()) {
      std::string needs;
      for (const auto& id : point.needs) needs += (needs.empty() ? "" : ", ") + id;
      err << "note: " << point.id << " (stage " << point.stage << ") uses the points " << needs
          << ": they must be done before it starts\n";
    }
  }
}

namespace {

// Runs `points` (all of the experiment, or one stage's) that still need work; returns every
// point's outcome.
std::vector<SweepOutcome> run_points(const Experiment& experiment, const std::vector<Point>& points,
                                     const std::string& title, const std::filesystem::path& exp_dir,
                                     const SweepSettings& settings, std::ostream& out,
                                     std::ostream& err, bool& interrupted) {
  SweepPlan plan = plan_sweep(experiment, points, exp_dir, settings, out, err);
  out << title << ": " << points.size() << " points, " << plan.items.size() << " to run, "
      << plan.at_once << " at once, " << plan.total_threads << " threads\n"
      << std::flush;
  SweepOptions options;
  options.jobs = settings.jobs;
  options.fail_fast = settings.fail_fast;
  options.prefix_output = settings.jobs > 1;
  options.forward_signals = true;
  options.messages = &out;
  const SweepReport report = run_sweep(plan.items, options);
  for (std::size_t k = 0; k < plan.to_run.size(); ++k) {
    SweepOutcome& outcome = plan.outcomes[plan.to_run[k]];
    outcome = report.outcomes[k];
    if (report.interrupted && outcome.state == RunState::Queued) outcome.error = "interrupted";
  }
  interrupted = report.interrupted;
  return plan.outcomes;
}

// The first point `point` needs that is not done, as "stage S's point ID (failed)"; "" when
// every one is done.
std::string missing_need(const Experiment& experiment, const Point& point,
                         const std::filesystem::path& exp_dir) {
  for (const auto& id : point.needs) {
    RunStatus status;
    try {
      status = read_status(RunPaths(exp_dir / id).status);
    } catch (const std::exception&) {
      status.state = RunState::Failed;
    }
    if (status.state == RunState::Done) continue;
    std::string stage;
    for (const auto& p : experiment.points)
      if (p.id == id) stage = p.stage;
    const bool never = !std::filesystem::exists(RunPaths(exp_dir / id).status);
    return (stage.empty() ? "point " : "stage " + stage + "'s point ") + id + " (" +
           (never ? std::string("not run") : state_name(status.state)) + ")";
  }
  return "";
}

// A file with [stage.*]: the stages one after the other; a point whose earlier point is not
// done is not run.
std::vector<SweepOutcome> run_stages(const Experiment& experiment,
                                     const std::filesystem::path& exp_dir,
                                     const SweepSettings& settings, std::ostream& out,
                                     std::ostream& err, bool& interrupted) {
  std::vector<SweepOutcome> outcomes;
  bool failed = false;
  for (const Stage& stage : experiment.stages) {
    std::vector<Point> ready;
    for (const Point& p : experiment.points) {
      if (p.stage != stage.name) continue;
      const std::string missing = missing_need(experiment, p, exp_dir);
      if (missing.empty() && !(settings.fail_fast && failed)) {
        ready.push_back(p);
        continue;
      }
      const std::string why = missing.empty() ? "fail-fast" : "needs " + missing;
      out << "skip " << p.id << "  " << p.label << "  (" << why << ")\n";
      outcomes.push_back({p.id, p.label, RunState::Queued, "not run: " + why, 0, false, ""});
    }
    if (ready.empty()) continue;
    const std::string title = experiment.name + " stage " + stage.name + " (" + stage.kind + ")";
    for (auto& o : run_points(experiment, ready, title, exp_dir, settings, out, err, interrupted)) {
      failed = failed || o.state == RunState::Failed;
      outcomes.push_back(std::move(o));
    }
    if (interrupted) break;
  }
  return outcomes;
}

}  // namespace

int run_experiment(const Experiment& experiment, const SweepSettings& settings, std::ostream& out,
                   std::ostream& err) {
  const std::filesystem::path root = std::filesystem::absolute(settings.runs_dir);
  const std::filesystem::path exp_dir = experiment_dir(root, experiment.name);
  write_experiment_copy(root, experiment);
  bool interrupted = false;
  const std::vector<SweepOutcome> outcomes =
      experiment.stages.empty() ? run_points(experiment, experiment.points, experiment.name,
                                             exp_dir, settings, out, err, interrupted)
                                : run_stages(experiment, exp_dir, settings, out, err, interrupted);

  out << "\n" << format_summary(outcomes);
  if (settings.report && !interrupted) write_sweep_report(exp_dir, out, err);
  const auto failed = std::count_if(outcomes.begin(), outcomes.end(),
                                    [](const auto& o) { return o.state == RunState::Failed; });
  const auto not_run = std::count_if(outcomes.begin(), outcomes.end(), [](const auto& o) {
    return o.state == RunState::Queued && o.error.rfind("not run: ", 0) == 0;
  });
  if (interrupted) {
    out << "interrupted\n";
    return 130;
  }
  if (failed > 0)
    out << failed << " of " << outcomes.size() << " points failed (see their run.log)\n";
  if (not_run > 0)
    out << not_run << " points not run: an earlier stage's point they need is not done\n";
  return failed > 0 || not_run > 0 ? 1 : 0;
}

std::string format_duration(double seconds) {
  char text[32];
  if (!(seconds >= 0)) seconds = 0;
  if (seconds < 60) {
    std::snprintf(text, sizeof text, "%.1fs", seconds);
  } else if (seconds < 3600) {
    const long s = std::lround(seconds);
    std::snprintf(text, sizeof text, "%ldm%02lds", s / 60, s % 60);
  } else {
    const long m = std::lround(seconds / 60);
    std::snprintf(text, sizeof text, "%ldh%02ldm", m / 60, m % 60);
  }
  return text;
}

std::string format_summary(const std::vector<SweepOutcome>& outcomes) {
  std::vector<std::vector<std::string>> rows = {{"id", "label", "state", "time", "error"}};
  for (const auto& o : outcomes) {
    std::string state = state_name(o.state);
    if (o.skipped) state += " (skipped)";
    if (!o.elsewhere.empty()) state += " (elsewhere)";
    if (o.state == RunState::Queued) state = "not run";
    rows.push_back({o.id, o.label, state,
                    o.state == RunState::Queued ? "-" : format_duration(o.seconds), o.error});
  }
  std::vector<std::size_t> width(rows[0].size(), 0);
  for (const auto& row : rows)
    for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  std::ostringstream out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line += std::string(width[c] - row[c].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << "\n";
  }
  return out.str();
}

}  // namespace wb
