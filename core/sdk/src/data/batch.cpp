// Batch::to: moves every defined tensor of a batch to a device.
#include "workbench/batch.h"

#include <ATen/ATen.h>

namespace wb {

namespace {
template <class F>
Batch map(const Batch& b, F f) {
  Batch out;
  for (const auto& v : b.views) out.views.push_back(f(v));
  for (const auto& g : b.geometry) out.geometry.push_back({f(g.box), f(g.flip)});
  out.labels = f(b.labels);
  out.index = f(b.index);
  out.cluster = f(b.cluster);
  return out;
}
}  // namespace

Batch Batch::to(c10::Device device) const {
  return map(*this, [&](const at::Tensor& t) {
    if (!t.defined()) return t;
    const bool async = device.is_cuda() && t.is_cpu() && t.is_pinned();
    return t.to(device, /*non_blocking=*/async);
  });
}

Batch Batch::pinned() const {
  return map(*this, [](const at::Tensor& t) {
    return t.defined() && t.is_cpu() && !t.is_pinned() ? t.pin_memory() : t;
  });
}

}  // namespace wb
