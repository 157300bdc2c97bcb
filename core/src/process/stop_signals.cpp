#include "process/stop_signals.h"

#include <csignal>

#include "workbench/stop.h"

namespace wb {

namespace {

void on_stop_signal(int) {
  request_stop();
}

}  // namespace

void stop_on_signals() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

}  // namespace wb
