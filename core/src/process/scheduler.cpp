#include "process/scheduler.h"

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <iostream>
#include <optional>

#include "process/spawn.h"

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

// Starts one command in a process group of its own (so a Ctrl-C at the terminal reaches only
// us, and we decide what the children get). Returns the error text when it cannot start.
std::optional<std::string> spawn(const Command& command, bool capture, int pass_fd,
                                 Running& running) {
  ProcessSpec spec;
  spec.pass_fd = pass_fd;
  spec.argv = command.argv;
  spec.env = command.env;
  spec.output = capture ? ProcessSpec::Output::Pipe : ProcessSpec::Output::Inherit;
  spec.own_process_group = true;
  try {
    const Process process = spawn_process(spec);
    running.pid = process.pid;
    running.out = process.out;
    running.err = process.err;
  } catch (const std::exception& e) {
    return std::string(e.what());
  }
  running.start = Clock::now();
  return std::nullopt;
}

void send_signal(pid_t pid, int signal) {
  if (::kill(-pid, signal) != 0) ::kill(pid, signal);  // the group, else the process
}

}  // namespace

void request_interrupt(int signal) {
  on_signal(signal);
}

SchedulerReport schedule_commands(const std::vector<Command>& commands,
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
    const ExitStatus status = exit_status(wait_status);
    result.signal = status.signal;
    result.exit_code = status.exit_code;
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
      int pass_fd = -1;
      if (options.claim && !options.claim(r.index, &pass_fd)) {
        report.results[r.index].skipped = true;
        continue;
      }
      auto error = spawn(commands[r.index], options.prefix_output, pass_fd, r);
      close_fd(pass_fd);  // the child holds its own copy now
      if (error) {
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
