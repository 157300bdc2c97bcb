// Training curves of a report averaged over seeds step by step (mean and sample std: wb::mean_std,
// workbench/stats.h, as for every other statistic of the report).
#pragma once

#include <cstdint>
#include <vector>

#include "h5/metrics.h"  // Series
#include "workbench/stats.h"

namespace wb {

// A curve averaged over seeds: at each step recorded by any of them, the mean and sample std
// of the seeds that recorded it (aligned by step, not by row).
struct MeanCurve {
  std::vector<std::int64_t> steps;
  std::vector<MeanStd> values;
};

// Column `column` of each series (0 for a scalar series).
MeanCurve mean_curve(const std::vector<const Series*>& series, std::int64_t column = 0);

}  // namespace wb
