// The life of one point in its own process (`workbench _point DIR`, started by the sweep):
// status.toml moves from queued to running to done or failed, run.log is set up, the threads
// are set, ranks 1..n-1 are started for data-parallel training, progress is shown and saved,
// the point is trained (train/train_point.h) and evaluated (eval/evaluate.h). Rank r > 0 runs
// the same command with --rank r and only trains, in <run>/rank<r>/. Under a launcher every
// rank is started by it, and the ranks meet through its environment (docs/scale.md).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "dist/rendezvous.h"

namespace wb {

struct PointOptions {
  std::filesystem::path dir;  // the run directory (runs/<experiment>/<id>)
  int threads = 0;            // intra-op threads per rank; 0 = the config's, else all cores
  int nproc = 1;              // data-parallel processes (ranks) for this point
  int rank = 0;               // this process's rank; rank 0 starts the others
  std::vector<std::string> plugin_paths;
  // Set when a launcher (torchrun, srun) started this process as one rank of the point: the
  // ranks come from it (nproc and rank are ignored) and rank 0 starts no others.
  std::optional<Rendezvous> launcher;
};

// The command line that runs a point: `<exe> _point DIR --threads T --nproc N --rank R
// [--plugin-path P]...`, what the `_point` verb parses back.
std::vector<std::string> point_command(const std::string& exe, const PointOptions& options);

// A process started by a launcher (`workbench run` sets WB_PARENT_PID) dies with it (SIGKILL
// when the launcher is gone), so that a rerun after the launcher was killed does not race an
// orphaned point; exits at once when the launcher is gone already. No-op otherwise.
void die_with_parent();

// Runs the point's whole life in this process; returns the process's exit status (0 = done, 1 =
// failed, with the reason in status.toml and run.log).
int point_main(const PointOptions& options);

}  // namespace wb
