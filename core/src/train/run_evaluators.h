// Runs the evaluators of a run on its trained model and records their results in metrics.h5
// (/eval/<name>/<metric>). Used at the end of a point (execute.cpp) and by `workbench eval`.
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

struct EvaluatorRun {
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

// Runs the selected evaluators of run.config in order, skipping those already in metrics.h5
// unless run.force; flushes metrics after each one. Returns the names that ran.
std::vector<std::string> run_evaluators(const EvaluatorRun& run, Model& model, c10::Device device);

// "cpu" | "cuda" | "auto" (CUDA when LibTorch has a usable device).
c10::Device pick_device(const std::string& wanted);

}  // namespace wb
