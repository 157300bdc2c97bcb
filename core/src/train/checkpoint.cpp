#include "train/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <fcntl.h>
#include <unistd.h>

#include <stdexcept>

namespace wb {

namespace fs = std::filesystem;

namespace {

void fsync_path(const fs::path& p, bool directory) {
  const int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

at::Tensor rng_state() {
  return at::detail::getDefaultCPUGenerator().get_state();
}

}  // namespace

void save_checkpoint(const fs::path& file, const CheckpointState& state) {
  torch::serialize::OutputArchive archive;
  archive.write("step", at::tensor(state.step));
  archive.write("rng_cpu", rng_state());
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
    archive.save_to(tmp.string());
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw std::runtime_error("cannot write checkpoint " + tmp.string() + ": " + e.what());
  }
  fsync_path(tmp, false);
  fs::rename(tmp, file);
  fsync_path(file.parent_path(), true);
}

std::int64_t load_checkpoint(const fs::path& file, CheckpointState& state) {
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(file.string());
    at::Tensor step, rng;
    archive.read("step", step);
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
