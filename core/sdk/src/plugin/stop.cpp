#include "workbench/stop.h"

#include <atomic>

namespace wb {

namespace {

std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free, "a signal handler sets the stop flag");

}  // namespace

void request_stop() noexcept {
  g_stop.store(true);
}

bool stop_requested() noexcept {
  return g_stop.load();
}

void clear_stop_request() noexcept {
  g_stop.store(false);
}

void throw_if_stop_requested(const std::string& where) {
  if (stop_requested()) throw Interrupted("interrupted: " + where);
}

}  // namespace wb
