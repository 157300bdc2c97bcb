// Mean and sample standard deviation: the one rule that evaluators (over seeds of a draw) and
// reports (over the seeds of a configuration) share. Free of LibTorch.
#pragma once

#include <cstddef>
#include <limits>
#include <vector>

namespace wb {

struct MeanStd {
  std::size_t n = 0;                                       // finite values counted
  double mean = std::numeric_limits<double>::quiet_NaN();  // NaN when n == 0
  double std = std::numeric_limits<double>::quiet_NaN();   // sample std (n - 1); NaN when n < 2
};

// Non-finite values (a diverged run's NaN) are left out, so one bad seed does not hide the rest.
MeanStd mean_std(const std::vector<double>& values);

}  // namespace wb
