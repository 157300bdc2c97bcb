// The progress line of a running point, and how often it is shown: a full line every few
// seconds when stdout is a file or a pipe (logs stay short), a line rewritten in place with '\r'
// when it is a terminal.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace wb {

// "epoch 1.25  step 120/1000  loss 4.1234  312.5 img/s  ETA 2m13s"
std::string format_progress(double epoch, std::int64_t step, std::int64_t total_steps, double loss,
                            double images_per_second, double eta_seconds);

class ProgressPrinter {
 public:
  // `interval`: seconds between full lines (non-terminal) or between rewrites (terminal).
  ProgressPrinter(std::FILE* out, bool terminal, double interval);
  ~ProgressPrinter();  // ends a rewritten line with a newline
  ProgressPrinter(const ProgressPrinter&) = delete;
  ProgressPrinter& operator=(const ProgressPrinter&) = delete;

  // Shows `line` if the interval has passed since the last one shown, or if it is the first or
  // `last` one. `now`: seconds on a monotonic clock. Returns whether it was shown.
  bool update(const std::string& line, double now, bool last = false);
  // Ends a rewritten line so that what follows starts on a line of its own.
  void end_line();

 private:
  std::FILE* out_;
  bool terminal_;
  double interval_;
  double last_shown_ = 0;
  bool shown_any_ = false;
  bool open_line_ = false;
};

}  // namespace wb
