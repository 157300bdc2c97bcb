// A request to stop the process early: a point process sets it when SIGINT or SIGTERM arrives
// (Ctrl-C at `workbench run`, a scheduler's SIGTERM). The trainer checks it after every step (it
// writes a checkpoint, then stops); a Loader checks it before handing out a batch and throws
// Interrupted, so that every evaluator loop that reads batches (fine-tuning, feature extraction)
// ends at its next batch. Long loops that read no batches call throw_if_stop_requested().
#pragma once

#include <stdexcept>
#include <string>

namespace wb {

// Thrown where a loop noticed the stop request; not a failure of the code that was stopped.
class Interrupted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Async-signal-safe (a lock-free atomic): may be called from a signal handler.
void request_stop() noexcept;
bool stop_requested() noexcept;
// Withdraws a request (tests; a process that goes on after handling one).
void clear_stop_request() noexcept;
// Throws Interrupted("interrupted: <where>") when a stop was requested.
void throw_if_stop_requested(const std::string& where);

}  // namespace wb
