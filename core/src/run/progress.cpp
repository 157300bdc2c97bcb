#include "run/progress.h"

#include <cmath>

#include "run/sweep.h"

namespace wb {

std::string format_progress(double epoch, std::int64_t step, std::int64_t total_steps, double loss,
                            double images_per_second, double eta_seconds) {
  char text[160];
  std::snprintf(text, sizeof text, "epoch %.2f  step %lld/%lld  loss %.4f  %.1f img/s  ETA %s",
                epoch, static_cast<long long>(step), static_cast<long long>(total_steps), loss,
                images_per_second, format_duration(eta_seconds).c_str());
  return text;
}

ProgressPrinter::ProgressPrinter(std::FILE* out, bool terminal, double interval)
    : out_(out), terminal_(terminal), interval_(interval) {}

ProgressPrinter::~ProgressPrinter() {
  end_line();
}

bool ProgressPrinter::update(const std::string& line, double now, bool last) {
  if (shown_any_ && !last && now - last_shown_ < interval_) return false;
  shown_any_ = true;
  last_shown_ = now;
  if (terminal_) {
    std::fprintf(out_, "\r%s\033[K", line.c_str());  // \033[K clears what a longer line left
    open_line_ = true;
    if (last) end_line();
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
  return true;
}

void ProgressPrinter::end_line() {
  if (!open_line_) return;
  std::fputc('\n', out_);
  std::fflush(out_);
  open_line_ = false;
}

}  // namespace wb
