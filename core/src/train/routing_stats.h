// Per-MoE-layer routing statistics logged during training (docs/methods.md §6): expert load,
// entropies, the auxiliary losses' cv², and the dropped fraction.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "workbench/routing.h"

namespace wb {

struct RoutingStats {
  std::vector<double> expert_load;  // fraction of kept (token, choice) assignments per expert
  double load_entropy = 0;   // entropy (nats) of expert_load: log E when balanced, 0 when collapsed
  double token_entropy = 0;  // mean entropy of the dense gate distribution of a token
  double importance_cv2 = 0, load_cv2 = 0;  // the aux losses, when the gate computes them
  double dropped = 0;                       // fraction of assignments dropped for capacity
};

RoutingStats routing_stats(const Routing& routing);

// The same statistics as one tensor on the routing's device, [E + 5]: expert_load, then
// load_entropy, token_entropy, importance_cv2, load_cv2, dropped. The trainer reads the tensors
// of all layers in one transfer (routing_stats_from turns a row back into RoutingStats).
at::Tensor routing_stats_tensor(const Routing& routing);
RoutingStats routing_stats_from(const at::Tensor& row, std::int64_t experts);

}  // namespace wb
