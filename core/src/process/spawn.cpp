#include "process/spawn.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

extern char** environ;

namespace wb {

namespace {

std::vector<std::string> environment(const ProcessSpec& spec) {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const std::string entry = *e;
    const std::string key = entry.substr(0, entry.find('='));
    bool overridden = false;
    for (const auto& [k, v] : spec.env) overridden = overridden || k == key;
    if (!overridden) env.push_back(entry);
  }
  for (const auto& [k, v] : spec.env) env.push_back(k + "=" + v);
  return env;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// posix_spawn's attribute and file-action objects, destroyed however we leave.
struct SpawnState {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  SpawnState() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  ~SpawnState() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
  SpawnState(const SpawnState&) = delete;
  SpawnState& operator=(const SpawnState&) = delete;
};

}  // namespace

Process spawn_process(const ProcessSpec& spec) {
  if (spec.argv.empty()) throw std::runtime_error("empty command");
  const std::string& program = spec.argv.front();
  int out[2] = {-1, -1}, err[2] = {-1, -1};
  auto close_all = [&] {
    for (int* fd : {&out[0], &out[1], &err[0], &err[1]}) close_fd(*fd);
  };
  if (spec.output == ProcessSpec::Output::Pipe &&
      (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0)) {
    const std::string reason = std::strerror(errno);
    close_all();
    throw std::runtime_error(program + ": pipe: " + reason);
  }

  SpawnState state;
  // dup2 onto itself would keep close-on-exec: move a descriptor 3 out of the way first.
  int moved = -1;
  int pass_fd = spec.pass_fd;
  if (pass_fd == 3) {
    moved = ::fcntl(pass_fd, F_DUPFD_CLOEXEC, 10);
    if (moved < 0) {
      const std::string reason = std::strerror(errno);
      close_all();
      throw std::runtime_error(program + ": fcntl: " + reason);
    }
    pass_fd = moved;
  }
  if (pass_fd >= 0) posix_spawn_file_actions_adddup2(&state.actions, pass_fd, 3);
  // Files first: a relative output path is relative to our working directory, not the child's.
  if (spec.null_stdin)
    posix_spawn_file_actions_addopen(&state.actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  if (spec.output == ProcessSpec::Output::File) {
    posix_spawn_file_actions_addopen(&state.actions, STDOUT_FILENO, spec.output_file.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&state.actions, STDOUT_FILENO, STDERR_FILENO);
  } else if (spec.output == ProcessSpec::Output::Pipe) {
    posix_spawn_file_actions_adddup2(&state.actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&state.actions, err[1], STDERR_FILENO);
  }
  if (!spec.cwd.empty()) posix_spawn_file_actions_addchdir_np(&state.actions, spec.cwd.c_str());

  short flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
  if (spec.own_process_group) {
    flags |= POSIX_SPAWN_SETPGROUP;
    posix_spawnattr_setpgroup(&state.attr, 0);
  }
  posix_spawnattr_setflags(&state.attr, flags);
  sigset_t defaults, mask;
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGQUIT, SIGXFSZ, SIGCHLD})
    sigaddset(&defaults, s);
  posix_spawnattr_setsigdefault(&state.attr, &defaults);
  sigemptyset(&mask);
  posix_spawnattr_setsigmask(&state.attr, &mask);

  std::vector<std::string> argv_strings = spec.argv;
  std::vector<std::string> env_strings = environment(spec);
  auto argv = pointers(argv_strings);
  auto envp = pointers(env_strings);
  Process process;
  const int rc = spec.search_path ? posix_spawnp(&process.pid, program.c_str(), &state.actions,
                                                 &state.attr, argv.data(), envp.data())
                                  : posix_spawn(&process.pid, program.c_str(), &state.actions,
                                                &state.attr, argv.data(), envp.data());
  close_fd(out[1]);
  close_fd(err[1]);
  close_fd(moved);
  if (rc != 0) {
    close_all();
    throw std::runtime_error(program + ": " + std::strerror(rc));
  }
  if (spec.output == ProcessSpec::Output::Pipe) {
    for (int fd : {out[0], err[0]}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    process.out = out[0];
    process.err = err[0];
  }
  return process;
}

ExitStatus exit_status(int wait_status) {
  ExitStatus status;
  if (WIFSIGNALED(wait_status)) status.signal = WTERMSIG(wait_status);
  if (WIFEXITED(wait_status)) status.exit_code = WEXITSTATUS(wait_status);
  return status;
}

ExitStatus wait_process(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return ExitStatus{127, 0};  // not our child (any more)
  return exit_status(status);
}

int run_process(const ProcessSpec& spec) {
  Process process;
  try {
    process = spawn_process(spec);
  } catch (const std::exception&) {
    return 127;
  }
  const ExitStatus status = wait_process(process.pid);
  return status.signal != 0 ? 128 + status.signal : status.exit_code;
}

std::filesystem::path find_executable(const std::string& name) {
  namespace fs = std::filesystem;
  if (name.empty()) return {};
  if (name.find('/') != std::string::npos)
    return ::access(name.c_str(), X_OK) == 0 ? fs::path(name) : fs::path();
  const char* path = std::getenv("PATH");
  const std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    const fs::path candidate = fs::path(dirs.substr(start, end - start)) / name;
    std::error_code ec;
    if (end > start && fs::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
    start = end + 1;
  }
  return {};
}

}  // namespace wb
