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
};

void save_checkpoint(const std::filesystem::path& file, const CheckpointState& state);
// Restores into the given modules (and optimiser, when set); returns the step. Throws naming
// the file when it is unreadable or does not match the model.
std::int64_t load_checkpoint(const std::filesystem::path& file, CheckpointState& state);

}  // namespace wb
