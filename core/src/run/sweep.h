// A sweep: the points of an experiment that need work, each run as a child process by the
// scheduler (`workbench _point DIR`, run/point.h), with status.toml kept right whatever way the
// child ends (it cannot write its own status when a signal kills it), the summary table printed
// at the end, and the experiment's report written.
#pragma once

#include <filesystem>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "config/experiment.h"
#include "process/scheduler.h"
#include "store/status.h"

namespace wb {

struct SweepItem {
  std::string id, label;
  std::filesystem::path dir;  // the run directory; its status.toml is kept up to date
  Command command;            // what runs the point (`workbench _point DIR ...`, or a test's)
  // Whether the point needs no more work, judged again when it is claimed (another launcher
  // may have finished it meanwhile); empty: always needs work.
  std::function<bool(const RunStatus&)> complete;
};

// How `workbench run` runs an experiment.
struct SweepSettings {
  std::filesystem::path runs_dir = "runs";
  int jobs = 1;     // points at once
  int threads = 0;  // CPU threads in all, shared by the points at once; 0 = all cores
  int nproc = 1;    // data-parallel ranks per point
  bool fail_fast = false;
  bool report = true;  // write runs/<experiment>/report at the end
  std::vector<std::string> plugin_paths;
  std::string exe;  // the workbench executable the points run; empty = this process's
};

// Runs every point of `experiment` that still needs work and writes the report: points already
// complete are skipped, the others get their directory (config.toml, point.toml) and run as
// child processes, `jobs` at a time, each with its share of the threads. Returns the exit
// status of `workbench run`: 0 when every point is done, 1 when some failed, 130 when
// interrupted.
int run_experiment(const Experiment& experiment, const SweepSettings& settings, std::ostream& out,
                   std::ostream& err);

// `workbench run --prepare`: writes the experiment's copy and every training point's directory
// (config.toml, point.toml) under `runs_dir`, and prints each directory on a line of its own on
// `out`: what a launcher (torchrun, srun) then starts `workbench _point DIR` on. A stage's
// cluster and deploy points, which `_point` cannot run, are not written nor listed: a line on
// `err` names each and how to run it; a training point that uses earlier points is listed with a
// note on `err` naming them.
void prepare_experiment(const Experiment& experiment, const std::filesystem::path& runs_dir,
                        std::ostream& out, std::ostream& err);

struct SweepOptions {
  int jobs = 1;
  bool fail_fast = false;
  bool prefix_output = false;  // see SchedulerOptions
  bool forward_signals = false;
  std::function<void(const std::string&)> out, err;  // output sinks (SchedulerOptions)
  std::ostream* messages = nullptr;                  // "started"/"finished" lines; null: none
};

struct SweepOutcome {
  std::string id, label;
  RunState state = RunState::Queued;  // queued: never started (fail-fast or interrupted)
  std::string error;
  double seconds = 0;
  bool skipped = false;   // already complete before the sweep: not run
  std::string elsewhere;  // claimed by another trainer ("pid P on host H"): not run here
};

struct SweepReport {
  std::vector<SweepOutcome> outcomes;  // in the items' order
  bool interrupted = false;
  int failed() const;
};

// Marks every item queued (keeping what its status knew of finished evaluators), runs them, and
// records how each ended (record_result). Each point is claimed just before it starts
// (store/point_lock.h): a point held by another trainer, or completed by one meanwhile, is
// left alone and reported with `elsewhere` set. The point's process inherits the claim
// (descriptor 3, named by WB_POINT_LOCK_FD) and dies with this process (WB_PARENT_PID).
SweepReport run_sweep(const std::vector<SweepItem>& items, const SweepOptions& options);

// The status after a child ended, from what the child wrote itself and what the parent saw:
// exit 0 -> done; exit N -> failed, keeping the child's own error if it wrote one, else
// "exited with code N"; a signal -> failed "killed by SIGxxx"; interrupted -> failed
// "interrupted". Writes it to `status_file` and returns it.
RunStatus record_result(const std::filesystem::path& status_file, const CommandResult& result);

// The table printed at the end: id, label, state, time, error.
std::string format_summary(const std::vector<SweepOutcome>& outcomes);

// "1h02m", "3m05s", "12.3s".
std::string format_duration(double seconds);

}  // namespace wb
