// Named tensors in order: what `workbench export` writes and `[init] from` reads, in the two
// file formats the Python ecosystem loads: torch.save's (torch_file.h) and safetensors
// (safetensors.h).
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace wb {

using StateDict = std::vector<std::pair<std::string, at::Tensor>>;

// A module's parameters, then its buffers, under their dotted names: detached, contiguous
// copies on the CPU.
StateDict module_state(const torch::nn::Module& module);

const at::Tensor* find_tensor(const StateDict& state, const std::string& name);

// "[384, 3, 16, 16] float32"
std::string describe_tensor(const at::Tensor& tensor);

// Reads a state dict written by torch.save (a zip whose pickle holds a dict of tensors) or a
// safetensors file, told apart by their first bytes. A torch.save dict that holds the tensors
// under "state_dict" or "model" (training checkpoints) is read from there. Throws naming the
// file when it is neither, or holds something else than tensors where tensors are expected.
StateDict load_state_dict(const std::filesystem::path& file);

}  // namespace wb
