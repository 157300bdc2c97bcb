// The training loop: AdamW with warmup + half-cosine per step, the momentum encoder updated
// before the key forward, losses summed, NaN caught with the step and the terms, routing
// statistics and metrics logged, checkpoints written atomically and resumed from.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <torch/optim/optimizer.h>

#include "train/execute.h"
#include "train/model.h"
#include "workbench/views.h"

namespace wb {

class Communicator;

// Set from a signal handler: the loop checkpoints and stops at the end of the current step.
extern std::atomic<bool> g_stop_requested;

struct TrainSettings {
  std::int64_t total_steps = 0, warmup_steps = 0, batches_per_epoch = 1;
  double peak_lr = 0, min_lr = 0, weight_decay = 0, beta1 = 0.9, beta2 = 0.999, clip_grad = 0;
  std::int64_t log_every = 10, stats_every = 50, checkpoint_every = 0;
  std::int64_t images_per_step = 0;
};

TrainSettings train_settings(const RunConfig& config, std::int64_t batches_per_epoch,
                             int world_size);

struct StepResult {
  double loss = 0;
  std::map<std::string, double> logged;  // "loss/<plugin>/<metric>", "train/momentum", ...
  std::vector<BackboneOutput> online;    // outputs of the online encoder, per view
};

// One optimisation step on a batch already on the device: schedules, momentum update, forward
// of every view (online, then momentum without gradients), losses, NaN check, backward,
// gradient averaging over ranks, clipping, AdamW step.
StepResult train_step(Model& model, torch::optim::Optimizer& optimizer, const Batch& batch,
                      std::int64_t step, const TrainSettings& settings, Communicator& comm);

// Trains until total_steps, resuming from `checkpoint` when it exists. Returns normally when
// done; throws on NaN, on interruption (after writing a checkpoint) and on errors.
void train(const PointContext& context, Model& model, Loader& loader, Communicator& comm,
           c10::Device device, const TrainSettings& settings,
           const std::filesystem::path& checkpoint);

}  // namespace wb
