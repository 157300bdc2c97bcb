#include "train/routing_stats.h"

#include <ATen/ATen.h>

#include <cmath>

namespace wb {

at::Tensor routing_stats_tensor(const Routing& routing) {
  at::NoGradGuard no_grad;
  const std::int64_t experts = routing.num_experts();
  const at::TensorOptions real = routing.probs.options().dtype(at::kDouble);
  // Everything stays on the device (no masked_select or bincount: both read the device back on
  // a GPU): kept assignments counted per expert with an index_add of the kept mask.
  const at::Tensor kept = routing.kept.defined() ? routing.kept.to(at::kDouble).reshape({-1})
                                                 : at::ones({routing.experts.numel()}, real);
  const at::Tensor counts =
      at::zeros({experts}, real).index_add_(0, routing.experts.reshape({-1}), kept);
  const at::Tensor total = counts.sum();
  const at::Tensor load = counts / total.clamp_min(1e-300);  // all zero when nothing was kept
  const at::Tensor load_entropy = -at::xlogy(load, load).sum();
  const at::Tensor p = routing.probs.to(at::kDouble);
  const at::Tensor token_entropy = (-(p * at::log(p.clamp_min(1e-30))).sum(1)).mean();
  auto aux = [&](const char* name) {
    const auto it = routing.aux.find(name);
    return it != routing.aux.end() && it->second.defined()
               ? it->second.detach().to(real.device(), at::kDouble).reshape({1})
               : at::zeros({1}, real);
  };
  const at::Tensor dropped = 1.0 - kept.mean();
  return at::cat({load, load_entropy.reshape({1}), token_entropy.reshape({1}), aux("importance"),
                  aux("load"), dropped.reshape({1})});
}

RoutingStats routing_stats_from(const at::Tensor& host, std::int64_t experts) {
  const at::Tensor h = host.to(at::kCPU, at::kDouble).contiguous();
  const double* v = h.data_ptr<double>();
  RoutingStats s;
  s.expert_load.assign(v, v + experts);
  s.load_entropy = v[experts];
  s.token_entropy = v[experts + 1];
  s.importance_cv2 = v[experts + 2];
  s.load_cv2 = v[experts + 3];
  s.dropped = v[experts + 4];
  return s;
}

RoutingStats routing_stats(const Routing& routing) {
  return routing_stats_from(routing_stats_tensor(routing), routing.num_experts());
}

}  // namespace wb
