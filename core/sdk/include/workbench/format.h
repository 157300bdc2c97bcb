// Numbers for people to read (logs, messages): rounded to a few significant digits, so that a
// percentage computed as 100 * 1803 / 2500 prints as 72.12 and not 72.11999999999999. Files
// meant for programs (metrics.h5, report.csv) keep every digit.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>

namespace wb {

// `significant` digits (at least one), no exponent between 1e-4 and 1e7, trailing zeros
// dropped: 72.12, 0.0025, 3, 12346, 1.5e-07.
inline std::string format_number(double value, int significant = 4) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (value == 0) return "0";
  if (significant < 1) significant = 1;
  char text[64];
  const int magnitude = static_cast<int>(std::floor(std::log10(std::fabs(value))));
  if (magnitude < -4 || magnitude >= 7) {
    std::snprintf(text, sizeof text, "%.*e", significant - 1, value);
    return text;
  }
  const int decimals = significant - 1 - magnitude > 0 ? significant - 1 - magnitude : 0;
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  std::string s = text;
  if (s.find('.') != std::string::npos) {
    s.erase(s.find_last_not_of('0') + 1);
    if (s.back() == '.') s.pop_back();
  }
  if (s == "-0") s = "0";
  return s;
}

}  // namespace wb
