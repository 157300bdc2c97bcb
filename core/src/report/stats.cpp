#include "report/stats.h"

#include <cmath>
#include <map>

namespace wb {

MeanCurve mean_curve(const std::vector<const Series*>& series, std::int64_t column) {
  std::map<std::int64_t, std::vector<double>> by_step;
  for (const Series* s : series) {
    if (column < 0 || column >= s->width) continue;
    for (std::size_t i = 0; i < s->steps.size(); ++i)
      by_step[s->steps[i]].push_back(
          s->values[i * static_cast<std::size_t>(s->width) + static_cast<std::size_t>(column)]);
  }
  MeanCurve out;
  for (const auto& [step, values] : by_step) {
    const MeanStd stat = mean_std(values);
    if (stat.n == 0) continue;
    out.steps.push_back(step);
    out.values.push_back(stat);
  }
  return out;
}

}  // namespace wb
