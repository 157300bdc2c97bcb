// Child processes: the one place that starts them (posix_spawn) and reads how they ended. Used
// by the scheduler (points of a sweep), a point's extra ranks and the report's gnuplot runs.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace wb {

struct ProcessSpec {
  std::vector<std::string> argv;  // argv[0]: a path, or a name looked up on PATH (search_path)
  std::vector<std::pair<std::string, std::string>> env;  // variables set on top of ours
  bool search_path = false;
  std::filesystem::path cwd;  // working directory; empty = ours

  enum class Output { Inherit, Pipe, File };
  Output output = Output::Inherit;    // where stdout and stderr go
  std::filesystem::path output_file;  // Output::File: both, truncated (relative to our cwd)
  bool null_stdin = false;            // stdin from /dev/null instead of ours
  // A process group of its own: a Ctrl-C at the terminal then reaches only us, and we decide
  // what the child gets. Otherwise it joins our group and receives what we receive.
  bool own_process_group = false;
  // A descriptor the child gets as its descriptor 3, open across exec (e.g. a point's lock
  // that the child then holds); -1: none.
  int pass_fd = -1;
};

struct Process {
  pid_t pid = 0;
  int out = -1, err = -1;  // Output::Pipe: the read ends (non-blocking, close-on-exec)
};

// Starts the process with the default disposition of every signal we might have caught and an
// empty signal mask. Throws std::runtime_error ("<argv[0]>: <reason>") when it cannot start.
Process spawn_process(const ProcessSpec& spec);

// How a child ended.
struct ExitStatus {
  int exit_code = 0;  // when it exited
  int signal = 0;     // when a signal killed it
  bool ok() const { return exit_code == 0 && signal == 0; }
};
ExitStatus exit_status(int wait_status);  // from waitpid's status word
ExitStatus wait_process(pid_t pid);       // blocks (EINTR is retried)

// Runs a command to its end: the exit code, 128 + N when killed by signal N, 127 when it could
// not start.
int run_process(const ProcessSpec& spec);

// An executable: `name` itself when it holds a '/', else the first match on PATH. Empty when
// there is none.
std::filesystem::path find_executable(const std::string& name);

}  // namespace wb
