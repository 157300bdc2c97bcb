// TEMPORARY (store branch): weak stand-ins so that the store, the metrics layer and the `run` /
// `_point` verbs link before the trainer and the experiment parser are merged. The real
// definitions (train/, config/) are strong symbols and win over these. The lead deletes this file.
#include <stdexcept>

#include "config/experiment.h"
#include "train/execute.h"

namespace wb {

__attribute__((weak)) void execute_point(const PointContext&) {
  throw std::runtime_error("execute_point is not implemented yet");
}

__attribute__((weak))
ConfigError::ConfigError(std::string f, int l, int c, const std::string& message)
    : std::runtime_error(f + ":" + std::to_string(l) + ":" + std::to_string(c) + ": " + message),
      file(std::move(f)),
      line(l),
      column(c) {}

__attribute__((weak)) Experiment load_experiment(const std::string&, const Registry&,
                                                 const ExperimentOptions&) {
  throw std::runtime_error("load_experiment is not implemented yet");
}

__attribute__((weak)) std::string format_points_table(const Experiment&) {
  throw std::runtime_error("format_points_table is not implemented yet");
}

__attribute__((weak)) RunConfig load_run_config(const std::filesystem::path&, const Registry&) {
  throw std::runtime_error("load_run_config is not implemented yet");
}

__attribute__((weak)) RunConfig parse_run_config(const std::string&, const std::string&,
                                                 const Registry&) {
  throw std::runtime_error("parse_run_config is not implemented yet");
}

}  // namespace wb
