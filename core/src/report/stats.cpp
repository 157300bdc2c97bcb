#include "report/stats.h"

#include <cmath>
#include <map>

namespace wb {

Stat summarize(const std::vector<double>& values) {
  Stat s;
  double sum = 0;
  for (double v : values)
    if (std::isfinite(v)) {
      sum += v;
      ++s.n;
    }
  if (s.n == 0) return s;
  s.mean = sum / static_cast<double>(s.n);
  if (s.n < 2) return s;
  double squares = 0;  // two passes: no cancellation for values far from zero
  for (double v : values)
    if (std::isfinite(v)) squares += (v - s.mean) * (v - s.mean);
  s.std = std::sqrt(squares / static_cast<double>(s.n - 1));
  return s;
}

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
    const Stat stat = summarize(values);
    if (stat.n == 0) continue;
    out.steps.push_back(step);
    out.values.push_back(stat);
  }
  return out;
}

}  // namespace wb
