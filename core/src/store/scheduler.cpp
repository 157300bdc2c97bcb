#include "store/scheduler.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <iostream>
#include <optional>

extern char** environ;

namespace wb {

namespace {

std::atomic<int> g_signal_count{0};
std::atomic<int> g_last_signal{0};

void on_signal(int signal) {
  g_last_signal.store(signal);
  g_signal_count.fetch_add(1);
}

// Installs the forwarding handlers for the scheduler's lifetime and restores the old ones.
class SignalGuard {
 public:
  explicit SignalGuard(bool active) : active_(active) {
    if (!active_) return;
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: poll() returns at once with EINTR
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
  }
  ~SignalGuard() {
    if (!active_) return;
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;

 private:
  bool active_;
  struct sigaction old_int_ {
  }, old_term_{};
};

using Clock = std::chrono::steady_clock;

struct Pipe {
  int read = -1, write = -1;
};

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

struct Running {
  std::size_t index = 0;
  pid_t pid = 0;
  Clock::time_point start;
  int out = -1, err = -1;  // read ends when output is prefixed
  std::string out_buffer, err_buffer;
  bool interrupted = false;
};

// Passes on every complete line of `buffer` (and the rest when `final`), prefixed.
void emit_lines(std::string& buffer, const std::string& prefix,
                const std::function<void(const std::string&)>& sink, bool final) {
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = buffer.find_first_of("\r\n", start);
    if (end == std::string::npos) break;
    const bool after_cr = end > 0 && buffer[end - 1] == '\r';  // "\r\n" ends one line
    if (end > start || (buffer[end] == '\n' && !after_cr))
      sink(prefix + buffer.substr(start, end - start) + "\n");
    start = end + 1;
  }
  buffer.erase(0, start);
  if (final && !buffer.empty()) {
    sink(prefix + buffer + "\n");
    buffer.clear();
  }
}

// Reads what is available on `fd` into `buffer`; closes it at end of file.
void read_available(int& fd, std::string& buffer) {
  char chunk[4096];
  while (fd >= 0) {
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n > 0) {
      buffer.append(chunk, static_cast<std::size_t>(n));
    } else if (n == 0) {
      close_fd(fd);
    } else {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) close_fd(fd);
      return;
    }
  }
}

std::vector<std::string> build_environment(const Command& command) {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const std::string entry = *e;
    const std::string key = entry.substr(0, entry.find('='));
    bool overridden = false;
    for (const auto& [k, v] : command.env) overridden = overridden || k == key;
    if (!overridden) env.push_back(entry);
  }
  for (const auto& [k, v] : command.env) env.push_back(k + "=" + v);
  return env;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Starts one command in a process group of its own (so a Ctrl-C at the terminal reaches only
// us, and we decide what the children get). Returns the error text when it cannot start.
std::optional<std::string> spawn(const Command& command, bool capture, Running& running) {
  if (command.argv.empty()) return std::string("empty command");
  Pipe out, err;
  auto cleanup = [&] {
    close_fd(out.read), close_fd(out.write), close_fd(err.read), close_fd(err.write);
  };
  if (capture) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return std::string("pipe: ") + std::strerror(errno);
    out = {fds[0], fds[1]};
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      cleanup();
      return std::string("pipe: ") + std::strerror(errno);
    }
    err = {fds[0], fds[1]};
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (capture) {
    posix_spawn_file_actions_adddup2(&actions, out.write, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, err.write, STDERR_FILENO);
  }
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t defaults, mask;
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGQUIT, SIGXFSZ, SIGCHLD})
    sigaddset(&defaults, s);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  sigemptyset(&mask);
  posix_spawnattr_setsigmask(&attr, &mask);

  std::vector<std::string> argv_strings = command.argv;
  std::vector<std::string> env_strings = build_environment(command);
  auto argv = pointers(argv_strings);
  auto envp = pointers(env_strings);
  pid_t pid = 0;
  const int rc =
      posix_spawn(&pid, argv_strings[0].c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close_fd(out.write);
  close_fd(err.write);
  if (rc != 0) {
    cleanup();
    return argv_strings[0] + ": " + std::strerror(rc);
  }
  running.pid = pid;
  running.start = Clock::now();
  if (capture) {
    fcntl(out.read, F_SETFL, fcntl(out.read, F_GETFL) | O_NONBLOCK);
    fcntl(err.read, F_SETFL, fcntl(err.read, F_GETFL) | O_NONBLOCK);
    running.out = out.read;
    running.err = err.read;
  }
  return std::nullopt;
}

void send_signal(pid_t pid, int signal) {
  if (::kill(-pid, signal) != 0) ::kill(pid, signal);  // the group, else the process
}

}  // namespace

void request_interrupt(int signal) {
  on_signal(signal);
}

SchedulerReport run_commands(const std::vector<Command>& commands,
                             const SchedulerOptions& options) {
  const SignalGuard guard(options.forward_signals);
  g_signal_count.store(0);
  const auto out_sink =
      options.out ? options.out : [](const std::string& line) { std::cout << line << std::flush; };
  const auto err_sink =
      options.err ? options.err : [](const std::string& line) { std::cerr << line << std::flush; };
  const std::size_t jobs = static_cast<std::size_t>(std::max(1, options.jobs));

  SchedulerReport report;
  report.results.resize(commands.size());
  std::vector<Running> running;
  std::size_t next = 0;
  bool stop_starting = false;
  int signals_handled = 0;

  auto finish = [&](Running& r, int wait_status) {
    read_available(r.out, r.out_buffer);
    read_available(r.err, r.err_buffer);
    const std::string prefix = "[" + commands[r.index].name + "] ";
    emit_lines(r.out_buffer, prefix, out_sink, true);
    emit_lines(r.err_buffer, prefix, err_sink, true);
    close_fd(r.out);  // a grandchild may still hold the pipe: do not wait for it
    close_fd(r.err);
    CommandResult& result = report.results[r.index];
    result.started = true;
    result.pid = r.pid;
    result.interrupted = r.interrupted;
    result.seconds = std::chrono::duration<double>(Clock::now() - r.start).count();
    if (WIFSIGNALED(wait_status)) result.signal = WTERMSIG(wait_status);
    if (WIFEXITED(wait_status)) result.exit_code = WEXITSTATUS(wait_status);
    if (!result.ok() && options.fail_fast) stop_starting = true;
    if (options.on_finish) options.on_finish(r.index, result);
  };

  for (;;) {
    const int count = g_signal_count.load();
    if (count > signals_handled) {
      signals_handled = count;
      stop_starting = true;
      report.interrupted = true;
      const int signal = count >= 2 ? SIGKILL : g_last_signal.load();
      for (auto& r : running) {
        r.interrupted = true;
        send_signal(r.pid, signal);
      }
    }
    while (!stop_starting && running.size() < jobs && next < commands.size()) {
      Running r;
      r.index = next++;
      if (auto error = spawn(commands[r.index], options.prefix_output, r)) {
        CommandResult& result = report.results[r.index];
        result.start_error = *error;
        if (options.fail_fast) stop_starting = true;
        if (options.on_finish) options.on_finish(r.index, result);
        continue;
      }
      if (options.on_start) options.on_start(r.index, r.pid);
      running.push_back(std::move(r));
    }
    if (running.empty()) break;

    // Wait for output (or 50 ms: exits are noticed by polling waitpid, not by SIGCHLD).
    std::vector<pollfd> fds;
    for (const auto& r : running)
      for (int fd : {r.out, r.err})
        if (fd >= 0) fds.push_back({fd, POLLIN, 0});
    ::poll(fds.data(), fds.size(), 50);
    for (auto& r : running) {
      read_available(r.out, r.out_buffer);
      read_available(r.err, r.err_buffer);
      const std::string prefix = "[" + commands[r.index].name + "] ";
      emit_lines(r.out_buffer, prefix, out_sink, false);
      emit_lines(r.err_buffer, prefix, err_sink, false);
    }
    for (std::size_t i = 0; i < running.size();) {
      int status = 0;
      const pid_t done = ::waitpid(running[i].pid, &status, WNOHANG);
      const bool lost = done < 0 && errno == ECHILD;  // reaped elsewhere: report exit 255
      if (lost) status = 255 << 8;
      if (done == running[i].pid || lost) {
        finish(running[i], status);
        running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
  }
  return report;
}

}  // namespace wb
