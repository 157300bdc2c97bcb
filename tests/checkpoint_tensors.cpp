#include "checkpoint_tensors.h"

#include <torch/serialize/input-archive.h>

namespace wbtest {

namespace {
void collect(torch::serialize::InputArchive& archive, const std::string& prefix,
             std::map<std::string, at::Tensor>& out) {
  for (const auto& key : archive.keys()) {
    at::Tensor t;
    if (archive.try_read(key, t)) {
      out[prefix + key] = t;
      continue;
    }
    torch::serialize::InputArchive sub;
    if (archive.try_read(key, sub)) collect(sub, prefix + key + ".", out);
  }
}
}  // namespace

std::map<std::string, at::Tensor> backbone_tensors(const std::filesystem::path& checkpoint) {
  torch::serialize::InputArchive archive;
  archive.load_from(checkpoint.string());
  torch::serialize::InputArchive backbone;
  archive.read("module/backbone", backbone);
  std::map<std::string, at::Tensor> out;
  collect(backbone, "", out);
  return out;
}

}  // namespace wbtest
