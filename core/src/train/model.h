// Builds what a run trains from its configuration: the backbone (with its gates), the momentum
// encoder when a loss asks for one, and the losses. Core never names a concrete plugin.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config/run_config.h"
#include "workbench/backbone.h"
#include "workbench/loss.h"

namespace wb {

class Registry;
class Communicator;

struct DataShape {
  std::int64_t channels = 1, image_size = 28, classes = 10;
};

struct Model {
  std::shared_ptr<Backbone> backbone;
  std::shared_ptr<Backbone> momentum;  // EMA copy, or null when no loss needs it
  std::vector<std::shared_ptr<Loss>> losses;
  std::vector<std::string> loss_names;  // plugin names, for logging ("loss/<name>/...")
  LossRequirements needs;               // union over the losses
  Communicator* comm = nullptr;
  // Expert parallelism (docs/scale.md): the backbone's expert weights this rank holds E / N of,
  // and N (1 = not sharded).
  std::vector<at::Tensor> sharded;
  std::int64_t expert_shards = 1;

  std::vector<at::Tensor> trainable_parameters() const;  // backbone + losses, requires_grad only
  void train(bool on);
  void to(c10::Device device);
  // Moves the momentum encoder towards the online backbone: p_m = m p_m + (1 - m) p_o.
  void momentum_update(double m);
};

// Keeps this rank's E / N experts in every MoE layer of the backbone and the momentum encoder
// (train.expert_parallel); fills Model::sharded. Every rank must hold the same weights before.
void shard_experts(Model& model, Communicator& comm);
// The inverse, collective: every rank gets all experts back (evaluation after training).
void gather_experts(Model& model);

// Copies parameters and buffers between two modules of the same structure.
void copy_weights(const torch::nn::Module& from, torch::nn::Module& to);

Model build_model(const RunConfig& config, const Registry& registry, const DataShape& data,
                  Communicator* comm);

// "cpu" | "cuda" | "auto" (CUDA when LibTorch has a usable device): the run's device setting.
c10::Device pick_device(const std::string& wanted);

}  // namespace wb
