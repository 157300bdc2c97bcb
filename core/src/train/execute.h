// Executes one point inside its child process: builds the model from the configuration,
// trains (resuming from checkpoints/last.pt when present), then runs the evaluators whose
// results are missing. Called by the `_point` verb (store/), which owns status and logging.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include "config/run_config.h"

namespace spdlog {
class logger;
}

namespace wb {

class Registry;
class MetricsFile;

// Progress as the console shows it; the store decides how to render it.
struct ProgressInfo {
  double epoch = 0;
  std::int64_t step = 0, total_steps = 0;
  double loss = 0;
  double images_per_second = 0;
  double eta_seconds = 0;
};

struct PointContext {
  std::filesystem::path dir;  // runs/<experiment>/<id>
  const RunConfig* config = nullptr;
  const Registry* registry = nullptr;
  MetricsFile* metrics = nullptr;
  spdlog::logger* log = nullptr;
  std::function<void(const ProgressInfo&)> progress;  // may be empty
  int threads = 0;                                    // resolved intra-op threads
  // Data-parallel ranks of this point. Rank 0 owns the run directory; rank r > 0 trains in
  // dir = <run>/rank<r> (its own log, metrics and checkpoints) and runs no evaluator.
  int rank = 0, world = 1;
  std::filesystem::path store;  // c10d file store shared by the ranks (world > 1)
};

void execute_point(const PointContext& context);

}  // namespace wb
