// [init]: a run starts from given weights instead of random ones (docs/export.md, "Starting
// from weights"). The source is a state dict in timm's names (a public MoCo v3 / MAE ViT
// converted by timm, or a `workbench export`), a workbench export directory, or another run
// (its directory or checkpoint file: the backbone of its last checkpoint, workbench names).
// Applied after the model is built and before training, only when there is no checkpoint to
// resume from.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "train/model.h"
#include "workbench/params.h"

namespace spdlog {
class logger;
}

namespace wb {

struct InitOutcome {
  std::string source;                   // what was read, for the log
  bool timm_names = false;              // the source's names were read as timm's
  std::size_t loaded = 0;               // weights copied
  std::vector<std::string> missing;     // backbone weights the source lacks (allowed), in the
                                        // source's naming
  std::vector<std::string> unexpected;  // source weights without a place (allowed, ignored)
};

// Copies the source's weights into `backbone`. Missing and unexpected weights are refused
// unless a glob pattern of allow_missing / allow_unexpected matches them (fnmatch: "*"
// matches across dots); a shape mismatch is always refused, with both shapes. Throws
// std::runtime_error naming the source and every refused weight; the backbone is unchanged
// then. A dense block's MLP (block<i>.fc1/fc2, or timm's blocks.<i>.mlp.fc1/fc2) whose block is
// a MoE layer in the backbone starts every expert of that layer (MoCE, docs/methods.md §8):
// weights copied with Gaussian noise of std expert_noise x the dense weight's std, biases
// copied exactly; the gate keeps its fresh initialisation (allow_missing must name it).
InitOutcome load_initial_weights(const std::filesystem::path& from, torch::nn::Module& backbone,
                                 const std::vector<std::string>& allow_missing,
                                 const std::vector<std::string>& allow_unexpected,
                                 double expert_noise = 0.0);

// The [init] table of a run: nothing when `from` is empty, else load_initial_weights into the
// backbone, the momentum encoder (when there is one) set to the same weights, and the outcome
// logged.
void apply_init(const Params& init, Model& model, spdlog::logger& log);

}  // namespace wb
