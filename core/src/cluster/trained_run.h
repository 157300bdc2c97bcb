// A finished (or interrupted) run loaded for tools that read its model: its configuration, the
// model rebuilt from it and the weights of checkpoints/last.pt (`workbench cluster`, `deploy`).
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <memory>

#include "config/run_config.h"
#include "dist/communicator.h"
#include "train/model.h"

namespace wb {

class Registry;

struct TrainedRun {
  std::filesystem::path dir;
  RunConfig config;
  std::unique_ptr<Communicator> comm;  // the model's (single process)
  Model model;                         // on `device`, eval mode
  c10::Device device = c10::kCPU;      // from the run's `device` setting
  std::int64_t step = 0;               // of the checkpoint
  DataShape shape;                     // of the run's training set
};

// Throws std::invalid_argument naming the directory when it is no run or has no checkpoint,
// ConfigError for a configuration the registry refuses.
TrainedRun open_trained_run(const std::filesystem::path& dir, const Registry& registry);

}  // namespace wb
