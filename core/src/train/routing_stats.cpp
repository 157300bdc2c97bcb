#include "train/routing_stats.h"

#include <ATen/ATen.h>

#include <cmath>

namespace wb {

RoutingStats routing_stats(const Routing& routing) {
  at::NoGradGuard no_grad;
  RoutingStats s;
  const std::int64_t experts = routing.num_experts();
  const at::Tensor kept = routing.kept.to(at::kBool);
  const at::Tensor chosen = routing.experts.masked_select(kept);
  const at::Tensor counts = at::bincount(chosen.cpu(), {}, experts).to(at::kDouble);
  const double total = counts.sum().item<double>();
  const at::Tensor load = total > 0 ? counts / total : counts;
  s.expert_load.assign(load.data_ptr<double>(), load.data_ptr<double>() + experts);
  for (double f : s.expert_load)
    if (f > 0) s.load_entropy -= f * std::log(f);
  const at::Tensor p = routing.probs.to(at::kDouble);
  s.token_entropy = (-(p * at::log(p.clamp_min(1e-30))).sum(1)).mean().item<double>();
  if (auto it = routing.aux.find("importance"); it != routing.aux.end() && it->second.defined())
    s.importance_cv2 = it->second.item<double>();
  if (auto it = routing.aux.find("load"); it != routing.aux.end() && it->second.defined())
    s.load_cv2 = it->second.item<double>();
  s.dropped = 1.0 - kept.to(at::kDouble).mean().item<double>();
  return s;
}

}  // namespace wb
