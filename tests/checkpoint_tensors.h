// Reads the backbone's tensors out of a trainer checkpoint. In its own translation unit:
// LibTorch's serialization headers bring glog's CHECK macros, which clash with doctest's.
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <map>
#include <string>

namespace wbtest {
std::map<std::string, at::Tensor> backbone_tensors(const std::filesystem::path& checkpoint);
}
