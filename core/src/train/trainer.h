// The training loop: AdamW with warmup + half-cosine per step, the momentum encoder updated
// before the key forward, losses summed, NaN caught with the step and the terms, routing
// statistics and metrics logged, checkpoints written atomically and resumed from.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <torch/optim/optimizer.h>

#include "train/model.h"
#include "workbench/views.h"

namespace spdlog {
class logger;
}

namespace wb {

class Communicator;
class MetricsFile;

// Progress as the console shows it; the point's life (run/point.h) decides how to render it.
struct ProgressInfo {
  double epoch = 0;
  std::int64_t step = 0, total_steps = 0;
  double loss = 0;  // the mean loss of the last log interval
  double images_per_second = 0;
  double eta_seconds = 0;
};

// Where the training loop writes: metrics, log, progress.
struct TrainOutput {
  MetricsFile* metrics = nullptr;
  spdlog::logger* log = nullptr;
  std::function<void(const ProgressInfo&)> progress;  // may be empty
};

// More steps than any run could train (10^12: a million steps a second for eleven days); more
// is a typo such as epochs = 1e12, refused with a message instead of an ETA of millions of hours.
constexpr std::int64_t kMaxTrainSteps = 1'000'000'000'000;

// The [train] settings turned into steps for one data set: how long, the learning-rate
// schedule's ends, and how often to log and checkpoint.
struct TrainSchedule {
  std::int64_t total_steps = 0, warmup_steps = 0, batches_per_epoch = 1;
  double peak_lr = 0, min_lr = 0, weight_decay = 0, beta1 = 0.9, beta2 = 0.999, clip_grad = 0;
  double m0 = 0.99;  // momentum of the momentum encoder at step 0 (train.momentum)
  std::int64_t log_every = 10, stats_every = 50, checkpoint_every = 0;
  std::int64_t images_per_step = 0;  // the global batch
  bool bf16 = false;                 // train.precision = "bf16"
};

TrainSchedule train_schedule(const TrainSettings& settings, std::int64_t batches_per_epoch);

struct StepResult {
  at::Tensor loss;   // the total loss, a detached scalar on the device
  at::Tensor terms;  // [losses] float: each loss's weighted value, for the NaN message
  std::map<std::string, Metric> logged;  // "loss/<plugin>/<metric>", "train/momentum", ...
  std::vector<BackboneOutput> online;    // outputs of the online encoder, per view
};

// One optimisation step on a batch already on the device: schedules, momentum update, forward
// of every view (online, then momentum without gradients), losses, backward, gradient averaging
// over ranks, clipping, AdamW step. It never reads the device (the loop checks the loss for NaN
// at its log points).
StepResult train_step(Model& model, torch::optim::Optimizer& optimizer, const Batch& batch,
                      std::int64_t step, const TrainSchedule& schedule, Communicator& comm);

// Trains until total_steps, resuming from `checkpoint` when it exists. Returns normally when
// done; throws on NaN, on interruption (after writing a checkpoint) and on errors.
void train(const TrainOutput& output, Model& model, Loader& loader, Communicator& comm,
           c10::Device device, const TrainSchedule& schedule,
           const std::filesystem::path& checkpoint);

}  // namespace wb
