// Batch::to: moves every defined tensor of a batch to a device.
#include "workbench/batch.h"

#include <ATen/ATen.h>

namespace wb {

namespace {
at::Tensor move(const at::Tensor& t, c10::Device device) {
  return t.defined() ? t.to(device) : t;
}
}  // namespace

Batch Batch::to(c10::Device device) const {
  Batch out;
  for (const auto& v : views) out.views.push_back(move(v, device));
  for (const auto& g : geometry)
    out.geometry.push_back({move(g.box, device), move(g.flip, device)});
  out.labels = move(labels, device);
  out.index = move(index, device);
  out.cluster = move(cluster, device);
  return out;
}

}  // namespace wb
