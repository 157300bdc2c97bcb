// `workbench eval`: evaluates a run's last checkpoint again. Rebuilds the model from
// config.toml, loads checkpoints/last.pt, runs the evaluators whose results are missing from
// metrics.h5 (or the named ones, or all with force, or extra ones given inline, which are
// appended to config.toml), writes the results into metrics.h5 and records them in
// status.toml's evaluators_done.
#pragma once

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

namespace wb {

struct EvaluationRequest {
  std::filesystem::path dir;           // the run directory
  std::vector<std::string> only;       // evaluator names of the run (knn, knn_2, ...)
  std::vector<std::string> additions;  // extra evaluators as TOML inline tables
  bool force = false;                  // rerun evaluators whose results exist
  int threads = 0;                     // 0 = the config's, else all cores
  std::vector<std::string> plugin_paths;
  bool holds_lock = false;  // the caller holds the point's lock (a deploy stage's point process)
};

// Returns the exit status of `workbench eval`: 0 evaluated (or nothing to do), 1 an evaluator or
// the model failed (see run.log), 2 the request cannot be served (named on `err`).
int evaluate_on_demand(const EvaluationRequest& request, std::ostream& err);

}  // namespace wb
