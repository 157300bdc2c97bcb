#include "train/schedule.h"

#include <algorithm>
#include <cmath>

namespace wb {

double learning_rate(std::int64_t step, std::int64_t total_steps, std::int64_t warmup_steps,
                     double peak, double floor) {
  if (step < warmup_steps) return peak * static_cast<double>(step) / warmup_steps;
  const double span = std::max<std::int64_t>(1, total_steps - warmup_steps);
  const double t = std::clamp(static_cast<double>(step - warmup_steps) / span, 0.0, 1.0);
  return floor + (peak - floor) * 0.5 * (1.0 + std::cos(M_PI * t));
}

double momentum(std::int64_t step, std::int64_t total_steps, double m0) {
  const double t =
      std::clamp(static_cast<double>(step) / std::max<std::int64_t>(1, total_steps), 0.0, 1.0);
  return 1.0 - 0.5 * (1.0 + std::cos(M_PI * t)) * (1.0 - m0);
}

}  // namespace wb
