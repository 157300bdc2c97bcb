// Per-step schedules of MoCo v3 / CR-MoE training (docs/methods.md §4).
#pragma once

#include <cstdint>

namespace wb {

// Linear warmup from 0 to `peak` over `warmup_steps`, then half-cosine down to `floor` at
// `total_steps`. Evaluated at the start of `step` (0-based), as MoCo v3 adjusts per iteration.
double learning_rate(std::int64_t step, std::int64_t total_steps, std::int64_t warmup_steps,
                     double peak, double floor);

// m = 1 - (1 - m0) * (1 + cos(pi * t / T)) / 2: m0 at the start, 1 at the end.
double momentum(std::int64_t step, std::int64_t total_steps, double m0);

}  // namespace wb
