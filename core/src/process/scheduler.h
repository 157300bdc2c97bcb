// Runs a list of commands as child processes (process/spawn.h), at most `jobs` at once, and
// reports how each one ended (exit code or signal). Knows nothing about runs: the sweep
// (run/sweep.h) turns the results into status files, and tests drive it with plain /bin/sh
// commands.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace wb {

struct Command {
  std::string name;               // short name: the prefix of its output lines
  std::vector<std::string> argv;  // argv[0] is the program's path (no PATH search)
  std::vector<std::pair<std::string, std::string>> env;  // variables set on top of ours
};

struct CommandResult {
  bool started = false;     // false: never started (fail-fast, interrupt) or could not start
  std::string start_error;  // why it could not start
  pid_t pid = 0;
  int exit_code = 0;         // when it exited
  int signal = 0;            // when a signal killed it
  bool interrupted = false;  // we forwarded an interrupt (Ctrl-C) to it
  double seconds = 0;        // wall time from start to exit
  bool skipped = false;      // its claim declined it (SchedulerOptions::claim): not started
  bool ok() const { return started && signal == 0 && exit_code == 0; }
};

struct SchedulerOptions {
  int jobs = 1;
  bool fail_fast = false;  // start nothing new once a command has failed
  // Capture each child's stdout/stderr and pass them on line by line as "[name] line"; otherwise
  // the children write to our stdout/stderr directly (a terminal stays a terminal for them).
  bool prefix_output = false;
  std::function<void(const std::string&)> out, err;  // sinks for prefixed lines; default: ours
  // Catch SIGINT/SIGTERM while running: forward the signal to the children, start nothing new,
  // wait for them. A second signal kills them with SIGKILL.
  bool forward_signals = false;
  // Called just before command `index` would start: false skips it (its result says skipped;
  // on_finish is not called). It may set `*pass_fd` to a descriptor that the child gets as its
  // descriptor 3 (ProcessSpec::pass_fd) and that is closed here once the child has started.
  std::function<bool(std::size_t index, int* pass_fd)> claim;
  std::function<void(std::size_t index, pid_t pid)> on_start;
  std::function<void(std::size_t index, const CommandResult&)> on_finish;
};

struct SchedulerReport {
  std::vector<CommandResult> results;  // one per command, in the commands' order
  bool interrupted = false;
};

SchedulerReport schedule_commands(const std::vector<Command>& commands,
                                  const SchedulerOptions& options);

// Behaves as if SIGINT had arrived: what the signal handler does (also usable from tests and
// from the hooks above).
void request_interrupt(int signal = 2);

}  // namespace wb
