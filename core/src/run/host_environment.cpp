#include "run/host_environment.h"

#include <ATen/Context.h>

#include "data/datasets.h"

namespace wb {

PointEnvironment host_environment() {
  PointEnvironment environment;
  environment.data_shape = [](const DataSettings& data) { return peek_data_shape(data); };
  environment.has_cuda = [] {
    // LibTorch's answer does not change while the process runs: asked once for every point.
    static const bool cuda = at::hasCUDA();
    return cuda;
  };
  return environment;
}

}  // namespace wb
