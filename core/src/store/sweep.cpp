#include "store/sweep.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

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
  // what the point cost, and it is known however the child ended.
  if (result.started) {
    status.elapsed_seconds = result.seconds;
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
  for (const auto& item : items) {
    const RunPaths paths(item.dir);
    RunStatus queued;
    queued.evaluators_done = read_status_or_fresh(paths.status, options.messages).evaluators_done;
    write_status(paths.status, queued);
    report.outcomes.push_back({item.id, item.label, RunState::Queued, "", 0, false});
    commands.push_back(item.command);
  }

  SchedulerOptions scheduler;
  scheduler.jobs = options.jobs;
  scheduler.fail_fast = options.fail_fast;
  scheduler.prefix_output = options.prefix_output;
  scheduler.forward_signals = options.forward_signals;
  scheduler.out = options.out;
  scheduler.err = options.err;
  scheduler.on_start = [&](std::size_t index, pid_t pid) {
    if (options.messages)
      *options.messages << "start " << items[index].id << "  " << items[index].label << "  (pid "
                        << pid << ")\n"
                        << std::flush;
  };
  scheduler.on_finish = [&](std::size_t index, const CommandResult& result) {
    const RunStatus status = record_result(RunPaths(items[index].dir).status, result);
    SweepOutcome& outcome = report.outcomes[index];
    outcome.state = status.state;
    outcome.error = status.error;
    outcome.seconds = status.elapsed_seconds;
    if (options.messages)
      *options.messages << state_name(status.state) << " " << items[index].id << "  "
                        << items[index].label << "  " << format_duration(status.elapsed_seconds)
                        << (status.error.empty() ? "" : "  " + status.error) << "\n"
                        << std::flush;
  };
  report.interrupted = run_commands(commands, scheduler).interrupted;
  return report;
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
