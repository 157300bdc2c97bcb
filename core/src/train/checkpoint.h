// Checkpoints: every module's parameters and buffers, the optimiser state, the step and the
// random generator, written to a temporary file and renamed so a crash never leaves half a file.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

namespace wb {

struct CheckpointState {
  std::int64_t step = 0;  // steps completed
  std::map<std::string, std::shared_ptr<torch::nn::Module>> modules;
  torch::optim::Optimizer* optimizer = nullptr;  // may be null (evaluation-only loads)
  // Expert parallelism: the experts are this rank's of `expert_shards` ranks; a checkpoint
  // restores only into a model sharded the same way (docs/scale.md).
  std::int64_t expert_shards = 1, expert_rank = 0;
};

struct Model;

// A model's modules under the names its checkpoints use: "backbone", "momentum" (when it has a
// momentum encoder) and "loss<i>_<plugin>" (the i-th loss). The one place that knows them: the
// trainer saves and resumes with it, `workbench eval` loads with it.
CheckpointState checkpoint_state(Model& model, torch::optim::Optimizer* optimizer = nullptr);

void save_checkpoint(const std::filesystem::path& file, const CheckpointState& state);
// Restores into the given modules (and optimiser, when set); returns the step. Throws naming
// the file when it is unreadable or does not match the model.
std::int64_t load_checkpoint(const std::filesystem::path& file, CheckpointState& state);

}  // namespace wb
