#include "train/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <cerrno>
#include <stdexcept>

#include "store/atomic_file.h"
#include "store/disk_space.h"
#include "train/model.h"

namespace wb {

namespace fs = std::filesystem;

namespace {

at::Tensor rng_state() {
  return at::detail::getDefaultCPUGenerator().get_state();
}

}  // namespace

CheckpointState checkpoint_state(Model& model, torch::optim::Optimizer* optimizer) {
  CheckpointState state;
  state.modules["backbone"] = model.backbone;
  if (model.momentum) state.modules["momentum"] = model.momentum;
  for (std::size_t i = 0; i < model.losses.size(); ++i)
    state.modules["loss" + std::to_string(i) + "_" + model.loss_names[i]] = model.losses[i];
  state.optimizer = optimizer;
  return state;
}

void save_checkpoint(const fs::path& file, const CheckpointState& state) {
  torch::serialize::OutputArchive archive;
  archive.write("step", at::tensor(state.step));
  archive.write("rng_cpu", rng_state());
  if (state.expert_shards > 1)
    archive.write("expert_shards", at::tensor({state.expert_shards, state.expert_rank}));
  for (const auto& [name, module] : state.modules) {
    torch::serialize::OutputArchive sub;
    module->save(sub);
    archive.write("module/" + name, sub);
  }
  if (state.optimizer) {
    torch::serialize::OutputArchive sub;
    state.optimizer->save(sub);
    archive.write("optimizer", sub);
  }
  fs::create_directories(file.parent_path());
  const fs::path tmp = file.string() + ".tmp";
  try {
    try {
      archive.save_to(tmp.string());
    } catch (const c10::Error& e) {
      // LibTorch's writer says only "file write failed": the errno it left tells a full disk.
      throw WriteError(e.what_without_backtrace(), errno);
    }
    fsync_file(tmp);
    commit_file(tmp, file);
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw WriteError(
        write_failure("checkpoint", file, e, "the previous checkpoint stays as it was"),
        os_error_of(e));
  }
}

std::int64_t load_checkpoint(const fs::path& file, CheckpointState& state) {
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(file.string());
    at::Tensor step, rng;
    archive.read("step", step);
    // Expert shards: restoring them into a model sharded otherwise (another world size, or
    // `workbench eval` of one shard) would silently mix shapes: refused.
    at::Tensor shards;
    const std::int64_t written =
        archive.try_read("expert_shards", shards) ? shards[0].item<std::int64_t>() : 1;
    const std::int64_t written_rank = written > 1 ? shards[1].item<std::int64_t>() : 0;
    if (written != state.expert_shards || written_rank != state.expert_rank) {
      if (written > 1)
        throw std::runtime_error(
            "it holds only rank " + std::to_string(written_rank) + "'s experts of an " +
            "expert-parallel run over " + std::to_string(written) + " ranks " +
            "(train.expert_parallel): resume it with " + std::to_string(written) + " ranks and " +
            "expert_parallel on; evaluating or exporting such a checkpoint is not supported " +
            "(the run's own evaluation at the end of training sees all experts)");
      throw std::runtime_error("it holds all experts, and this model is expert-parallel over " +
                               std::to_string(state.expert_shards) +
                               " ranks: the run was trained without train.expert_parallel or "
                               "on one process");
    }
    if (archive.try_read("rng_cpu", rng)) {
      at::Generator generator = at::detail::getDefaultCPUGenerator();
      generator.set_state(rng);
    }
    for (auto& [name, module] : state.modules) {
      torch::serialize::InputArchive sub;
      if (!archive.try_read("module/" + name, sub))
        throw std::runtime_error("it has no module '" + name + "'");
      module->load(sub);
    }
    if (state.optimizer) {
      torch::serialize::InputArchive sub;
      if (!archive.try_read("optimizer", sub))
        throw std::runtime_error("it has no optimizer state");
      state.optimizer->load(sub);
    }
    state.step = step.item<std::int64_t>();
    return state.step;
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot restore checkpoint " + file.string() + ": " + e.what());
  }
}

}  // namespace wb
