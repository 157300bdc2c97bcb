// Runs the evaluators of a point on its trained model and records their results in metrics.h5
// (/eval/<name>/<metric>). Used at the end of a point's training (run/point.cpp) and on demand
// (`workbench eval`, eval/on_demand.h).
#pragma once

#include <c10/core/Device.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "config/run_config.h"
#include "train/model.h"

namespace spdlog {
class logger;
}

namespace wb {

class Registry;
class MetricsFile;

struct Evaluation {
  std::filesystem::path dir;  // the run directory: evaluator files go to dir/eval
  const RunConfig* config = nullptr;
  const Registry* registry = nullptr;
  MetricsFile* metrics = nullptr;
  spdlog::logger* log = nullptr;
  int threads = 0;
  std::string cache_tag;          // names the feature caches; changes when the weights change
  std::vector<std::string> only;  // evaluator names (evaluator_names) to consider; empty = all
  bool force = false;             // rerun evaluators whose results are already in metrics.h5
  bool keep_going = false;        // after a failure run the others, then throw naming all
  std::function<void(const std::string&)> on_done;  // after each evaluator's results are flushed
};

// Runs the selected evaluators of evaluation.config in order, skipping those already in
// metrics.h5 unless evaluation.force; flushes metrics after each one. Returns the names that ran.
std::vector<std::string> evaluate_point(const Evaluation& evaluation, Model& model,
                                        c10::Device device);

}  // namespace wb
