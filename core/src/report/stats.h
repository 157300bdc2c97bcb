// Statistics of a report: mean and sample standard deviation over seeds, and training curves
// averaged over seeds step by step.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "h5/metrics.h"  // Series

namespace wb {

struct Stat {
  std::size_t n = 0;
  double mean = std::numeric_limits<double>::quiet_NaN();  // NaN when n == 0
  double std = std::numeric_limits<double>::quiet_NaN();   // sample std (n - 1); NaN when n < 2
};

// Non-finite values (a diverged run's NaN) are left out, so one bad seed does not hide the rest.
Stat summarize(const std::vector<double>& values);

// A curve averaged over seeds: at each step recorded by any of them, the mean and sample std
// of the seeds that recorded it (aligned by step, not by row).
struct MeanCurve {
  std::vector<std::int64_t> steps;
  std::vector<Stat> values;
};

// Column `column` of each series (0 for a scalar series).
MeanCurve mean_curve(const std::vector<const Series*>& series, std::int64_t column = 0);

}  // namespace wb
