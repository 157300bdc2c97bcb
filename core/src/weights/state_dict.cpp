#include "weights/state_dict.h"

#include <stdexcept>

#include "weights/safetensors.h"
#include "weights/torch_file.h"

namespace wb {

StateDict module_state(const torch::nn::Module& module) {
  StateDict out;
  for (const auto& item : module.named_parameters())
    out.emplace_back(item.key(), item.value().detach().to(at::kCPU).contiguous());
  for (const auto& item : module.named_buffers())
    out.emplace_back(item.key(), item.value().detach().to(at::kCPU).contiguous());
  return out;
}

const at::Tensor* find_tensor(const StateDict& state, const std::string& name) {
  for (const auto& [n, t] : state)
    if (n == name) return &t;
  return nullptr;
}

std::string describe_tensor(const at::Tensor& tensor) {
  std::string s = "[";
  for (std::size_t i = 0; i < tensor.sizes().size(); ++i)
    s += (i ? ", " : "") + std::to_string(tensor.size(static_cast<std::int64_t>(i)));
  return s + "] " + c10::toString(tensor.scalar_type());
}

StateDict load_state_dict(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec))
    throw std::runtime_error(file.string() + ": no such file");
  if (is_safetensors_file(file)) return load_safetensors(file);
  if (is_zip_file(file)) return load_torch_file(file);
  throw std::runtime_error(file.string() +
                           ": neither a safetensors file nor a torch.save archive (zip)");
}

}  // namespace wb
