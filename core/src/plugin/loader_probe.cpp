#include "plugin/loader_probe.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <boost/dll/runtime_symbol_info.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>

#include "workbench/params.h"
#include "workbench/plugin.h"

namespace wb {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

ProbeVerdict failed(std::string reason, bool lasting = true) {
  ProbeVerdict v;
  v.reason = std::move(reason);
  v.lasting = lasting;
  return v;
}

std::string signal_name(int sig) {
  static const std::map<int, const char*> names = {
      {SIGSEGV, "SIGSEGV"}, {SIGABRT, "SIGABRT"}, {SIGBUS, "SIGBUS"},   {SIGILL, "SIGILL"},
      {SIGFPE, "SIGFPE"},   {SIGKILL, "SIGKILL"}, {SIGTERM, "SIGTERM"}, {SIGINT, "SIGINT"},
      {SIGPIPE, "SIGPIPE"}, {SIGTRAP, "SIGTRAP"}, {SIGSYS, "SIGSYS"},   {SIGQUIT, "SIGQUIT"}};
  const auto it = names.find(sig);
  const std::string name = it != names.end() ? it->second : "signal " + std::to_string(sig);
  return name + " (" + strsignal(sig) + ")";
}

// The last non-empty line a probe wrote on stderr, shortened: often the library's own message.
std::string last_line(const std::string& text) {
  std::size_t end = text.find_last_not_of(" \t\r\n");
  if (end == std::string::npos) return {};
  const std::size_t start = text.find_last_of('\n', end);
  std::string line = text.substr(start == std::string::npos ? 0 : start + 1,
                                 end - (start == std::string::npos ? 0 : start + 1) + 1);
  if (line.size() > 200) line = line.substr(0, 200) + "...";
  return line;
}

// A child process whose stdout and stderr are pipes to us.
struct Child {
  pid_t pid = -1;
  int out = -1, err = -1;  // read ends
  std::string output, errors;
  Clock::time_point start;
};

// How a child ended.
struct Ended {
  int status = 0;          // from waitpid
  bool timed_out = false;  // killed by us at the timeout
  std::string error;       // could not be started or waited for
};

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// Forks a child that runs `body(out, err)` with the write ends of its two pipes; `body` must not
// return. The child dies with us (PR_SET_PDEATHSIG), so a hanging probe does not outlive an
// interrupted host. In a host with threads, `body` may only make async-signal-safe calls.
bool spawn(Child& child, const std::function<void(int, int)>& body, std::string& error) {
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    error = std::string("could not be started: ") + std::strerror(errno);
    return false;
  }
  if (::pipe2(err, O_CLOEXEC) != 0) {
    error = std::string("could not be started: ") + std::strerror(errno);
    ::close(out[0]);
    ::close(out[1]);
    return false;
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::close(out[0]);
    ::close(err[0]);
    const int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, STDIN_FILENO);
    body(out[1], err[1]);
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  if (pid < 0) {
    error = std::string("could not be started: ") + std::strerror(errno);
    ::close(out[0]);
    ::close(err[0]);
    return false;
  }
  ::fcntl(out[0], F_SETFL, ::fcntl(out[0], F_GETFL) | O_NONBLOCK);
  ::fcntl(err[0], F_SETFL, ::fcntl(err[0], F_GETFL) | O_NONBLOCK);
  child.pid = pid;
  child.out = out[0];
  child.err = err[0];
  child.start = Clock::now();
  return true;
}

// Reads what is available; closes the descriptor at end of file. Keeps at most `limit` bytes
// (the last ones when `keep_tail`, else the first).
void drain(int& fd, std::string& text, std::size_t limit, bool keep_tail) {
  char buffer[65536];
  while (fd >= 0) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n > 0) {
      text.append(buffer, static_cast<std::size_t>(n));
      if (text.size() > limit)
        text = keep_tail ? text.substr(text.size() - limit) : text.substr(0, limit);
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
      close_fd(fd);
    } else if (errno == EAGAIN) {
      return;
    }
  }
}

void read_pipes(Child& c) {
  drain(c.out, c.output, 16 << 20, false);
  drain(c.err, c.errors, 4096, true);
}

// Runs `count` children, at most `parallel` at once, started by `start(i, child, error)`; a
// child still running after `timeout_seconds` is killed. `done(i, child, ended)` gets each
// one's output and end, in the order they end.
void supervise(std::size_t count, int parallel, double timeout_seconds,
               const std::function<bool(std::size_t, Child&, std::string&)>& start,
               const std::function<void(std::size_t, const Child&, const Ended&)>& done) {
  const auto timeout = std::chrono::duration<double>(timeout_seconds);
  std::vector<std::pair<std::size_t, Child>> running;
  std::size_t next = 0;
  while (next < count || !running.empty()) {
    for (; next < count && running.size() < static_cast<std::size_t>(std::max(1, parallel));
         ++next) {
      Child child;
      Ended ended;
      if (start(next, child, ended.error))
        running.emplace_back(next, std::move(child));
      else
        done(next, child, ended);
    }
    std::vector<pollfd> fds;
    for (const auto& [i, c] : running)
      for (int fd : {c.out, c.err})
        if (fd >= 0) fds.push_back({fd, POLLIN, 0});
    // Exits are noticed by waitpid below, at least every 20 ms.
    ::poll(fds.data(), fds.size(), 20);
    for (auto it = running.begin(); it != running.end();) {
      auto& [i, c] = *it;
      read_pipes(c);
      Ended ended;
      const pid_t pid = ::waitpid(c.pid, &ended.status, WNOHANG);
      if (pid == 0 && Clock::now() - c.start <= timeout) {
        ++it;
        continue;
      }
      if (pid == 0) {
        ::kill(c.pid, SIGKILL);
        while (::waitpid(c.pid, &ended.status, 0) < 0 && errno == EINTR) {
        }
        ended.timed_out = true;
      } else if (pid < 0) {
        ended.error = std::string("could not be waited for: ") + std::strerror(errno);
      }
      // What it wrote before exiting is in the pipes; a grandchild may hold them open, so read
      // what is there rather than wait for end of file.
      read_pipes(c);
      close_fd(c.out);
      close_fd(c.err);
      done(i, c, ended);
      it = running.erase(it);
    }
  }
}

void write_all(int fd, const std::string& text) {
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the reader is gone: it judges by our exit status
    written += static_cast<std::size_t>(n);
  }
}

// What a child reports on the one library it loaded with the in-process loader.
std::string format_probe_report(const PluginLoader& loader, const Registry& registry) {
  toml::table report;
  const bool ok = !loader.libraries().empty();
  report.insert("ok", ok);
  report.insert("reason", loader.failures().empty() ? "" : loader.failures().front().reason);
  if (ok) {
    const LoadedLibrary& lib = loader.libraries().front();
    report.insert("description", lib.description);
    report.insert("sdk_version", lib.sdk_version);
    report.insert("torch_version", lib.torch_version);
    report.insert("compiler", lib.compiler);
    toml::array entries;
    for (const Entry* e : registry.all()) {
      toml::array params;
      for (const ParamSpec& p : e->params)
        params.push_back(p.name + " = " +
                         (p.default_value ? format_value(*p.default_value) : "(unset)") + "  [" +
                         p.describe() + "]");
      entries.push_back(toml::table{{"kind", kind_name(e->kind)},
                                    {"name", e->name},
                                    {"doc", e->doc},
                                    {"params", std::move(params)}});
    }
    report.insert("entry", std::move(entries));
  }
  std::ostringstream out;
  out << report << "\n";
  return out.str();
}

// In a forked child of the probe process: loads the library here, writes the loader's report
// to `report_fd`, unloads it and exits, so that a crash at unload or exit is seen too.
[[noreturn]] void probe_here(const fs::path& library, int report_fd) {
  {
    Registry registry;
    ProbeOptions in_process;
    in_process.enabled = false;
    PluginLoader loader(registry, in_process);
    loader.load_file(library);
    write_all(report_fd, format_probe_report(loader, registry));
    ::close(report_fd);
  }
  std::exit(0);
}

// The verdict on one library from how its child ended and what it wrote.
toml::table judge(const Child& child, const Ended& ended, double timeout_seconds) {
  const bool reported = !child.output.empty();
  std::string tail = last_line(child.errors);
  tail = tail.empty() ? "" : " (its last output: \"" + tail + "\")";
  auto failure = [](const std::string& reason, bool lasting = true) {
    return toml::table{{"ok", false}, {"reason", reason}, {"lasting", lasting}};
  };
  if (!ended.error.empty()) return failure("the probe " + ended.error, false);
  if (ended.timed_out) {
    std::ostringstream seconds;
    seconds << timeout_seconds;
    return failure("the probe did not finish within " + seconds.str() +
                   " s (an endless loop or a deadlock while loading?) and was killed; touch the "
                   "file or delete the probe cache to probe it again (WORKBENCH_PROBE_TIMEOUT "
                   "sets the limit)");
  }
  const int status = ended.status;
  if (WIFSIGNALED(status)) {
    // These come from outside (Ctrl-C, kill, the OOM killer): no verdict on the library.
    const int sig = WTERMSIG(status);
    const bool external =
        sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT || sig == SIGKILL;
    return failure(
        "the probe was killed by " + signal_name(sig) +
            (reported ? " after loading the library (in a static destructor or at unload)"
                      : " while loading the library") +
            tail,
        !external);
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (code != 0)
    return failure("the probe exited with code " + std::to_string(code) +
                   (reported ? " after loading the library"
                             : " while loading the library (exit() in a static constructor?)") +
                   tail);
  if (!reported)
    return failure(
        "the probe exited with code 0 before it could report: the library ended the process "
        "while loading (exit() in a static constructor?)" +
        tail);
  try {
    toml::table report = toml::parse(child.output);
    if (!report["ok"].is_boolean()) return failure("the probe's report has no verdict");
    report.insert_or_assign("lasting", true);
    return report;
  } catch (const toml::parse_error& e) {
    return failure("the probe's report cannot be read: " + std::string(e.description()));
  }
}

ProbeVerdict verdict_from(const toml::table& t) {
  ProbeVerdict v;
  v.ok = t["ok"].value_or(false);
  v.reason = t["reason"].value_or(std::string());
  if (!v.ok && v.reason.empty()) v.reason = "the probe refused it without a reason";
  v.description = t["description"].value_or(std::string());
  v.lasting = t["lasting"].value_or(true);
  if (const toml::array* entries = t["entry"].as_array())
    for (const toml::node& e : *entries)
      if (const toml::table* et = e.as_table())
        v.entries.push_back((*et)["kind"].value_or(std::string()) + " " +
                            (*et)["name"].value_or(std::string()));
  return v;
}

}  // namespace

std::string probe_libraries(const std::vector<fs::path>& files, double timeout_seconds,
                            int parallel) {
  std::cout.flush();  // a forked child must not write our buffered output a second time
  std::fflush(nullptr);
  std::vector<toml::table> verdicts(files.size());
  supervise(
      files.size(), parallel, timeout_seconds,
      [&](std::size_t i, Child& child, std::string& error) {
        return spawn(
            child,
            [&](int out, int err) {
              // Whatever the library prints goes to the stderr pipe; `out` carries the report.
              ::dup2(err, STDOUT_FILENO);
              ::dup2(err, STDERR_FILENO);
              probe_here(files[i], out);
            },
            error);
      },
      [&](std::size_t i, const Child& child, const Ended& ended) {
        verdicts[i] = judge(child, ended, timeout_seconds);
      });
  toml::array libraries;
  for (std::size_t i = 0; i < files.size(); ++i) {
    verdicts[i].insert_or_assign("path", files[i].string());
    libraries.push_back(std::move(verdicts[i]));
  }
  std::ostringstream out;
  out << toml::table{{"library", std::move(libraries)}} << "\n";
  return out.str();
}

std::vector<ProbeVerdict> run_probes(const std::vector<fs::path>& files,
                                     const ProbeOptions& options) {
  std::ostringstream timeout;
  timeout << options.timeout_seconds;
  std::vector<std::string> args = {options.program.string(),
                                   "_probe",
                                   "--timeout",
                                   timeout.str(),
                                   "--parallel",
                                   std::to_string(std::max(1, options.parallel)),
                                   "--"};
  for (const auto& f : files) args.push_back(f.string());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::string failure;  // why the probe process gave no verdicts
  std::vector<ProbeVerdict> verdicts;
  // The probe process enforces each library's timeout; this bound only guards against the
  // probe process itself hanging.
  const double limit = options.timeout_seconds * static_cast<double>(files.size() + 1) + 60;
  supervise(
      1, 1, limit,
      [&](std::size_t, Child& child, std::string& error) {
        return spawn(
            child,
            [&](int out, int err) {  // only async-signal-safe calls until exec
              ::dup2(out, STDOUT_FILENO);
              ::dup2(err, STDERR_FILENO);
              ::execv(argv[0], argv.data());
              const char message[] = "cannot execute the probe program\n";
              [[maybe_unused]] const ssize_t n =
                  ::write(STDERR_FILENO, message, sizeof message - 1);
            },
            error);
      },
      [&](std::size_t, const Child& child, const Ended& ended) {
        // The probe process itself loads no library: it must exit 0 with a verdict for each.
        const bool exited_0 = ended.error.empty() && !ended.timed_out && WIFEXITED(ended.status) &&
                              WEXITSTATUS(ended.status) == 0;
        if (!exited_0) {
          const std::string tail = last_line(child.errors);
          failure = !ended.error.empty() ? ended.error
                    : ended.timed_out    ? "it did not finish"
                    : WIFSIGNALED(ended.status)
                        ? "it was killed by " + signal_name(WTERMSIG(ended.status))
                        : "it exited with code " + std::to_string(WEXITSTATUS(ended.status));
          if (!tail.empty()) failure += " (its last output: \"" + tail + "\")";
          return;
        }
        try {
          const toml::table report = toml::parse(child.output);
          const toml::array* libraries = report["library"].as_array();
          if (!libraries || libraries->size() != files.size()) {
            failure = "its report does not cover every library";
            return;
          }
          for (const toml::node& node : *libraries)
            verdicts.push_back(node.as_table() ? verdict_from(*node.as_table())
                                               : failed("the probe's report is malformed", false));
        } catch (const toml::parse_error& e) {
          failure = "its report cannot be read: " + std::string(e.description());
        }
      });
  if (verdicts.size() == files.size()) return verdicts;
  return std::vector<ProbeVerdict>(
      files.size(), failed("cannot be probed: the probe process (" + options.program.string() +
                               " _probe) failed: " + failure,
                           false));
}

fs::path find_probe_program() {
  boost::dll::fs::error_code dll_ec;
  const fs::path self = boost::dll::program_location(dll_ec).string();
  if (!dll_ec && self.filename() == "workbench") return self;
  // Another program linking libworkbench_core (the tests): the executable of the same build
  // or install, found from the library's own folder.
  const fs::path core_dir = boost::dll::this_line_location(dll_ec).parent_path().string();
  if (dll_ec) return {};
  std::error_code ec;
  for (const fs::path& candidate :
       {core_dir / WORKBENCH_BINDIR_FROM_LIBDIR / "workbench", core_dir / "../bin/workbench"})
    if (fs::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0)
      return fs::weakly_canonical(candidate, ec);
  return {};
}

LibraryStamp stamp_of(const fs::path& file) {
  const fs::path path = fs::absolute(file);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw fs::filesystem_error("cannot examine it", path,
                               std::error_code(errno, std::generic_category()));
  return {path.string(), static_cast<std::int64_t>(st.st_size),
          static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

ProbeCache::ProbeCache(fs::path file) : file_(std::move(file)), host_(this_host()) {
  for (Host& h : read(file_))
    if (h.is(host_)) host_.entries = std::move(h.entries);
}

ProbeCache::Host ProbeCache::this_host() {
  const HostAbi abi = host_abi();
  Host h;
  h.id = "workbench " + std::string(abi.sdk_version) + ", plugin ABI " +
         std::to_string(abi.abi_version) + ", LibTorch " + abi.torch_version + ", " + abi.cxx_abi;
  boost::dll::fs::error_code ec;
  const fs::path core = boost::dll::this_line_location(ec).string();
  try {
    h.core = stamp_of(core);
  } catch (const fs::filesystem_error&) {
    h.core.path = core.string();
  }
  return h;
}

namespace {

LibraryStamp stamp_in(const toml::table& t, const char* path, const char* size, const char* mtime) {
  return {t[path].value_or(std::string()), t[size].value_or(std::int64_t{-1}),
          t[mtime].value_or(std::int64_t{-1})};
}

}  // namespace

std::vector<ProbeCache::Host> ProbeCache::read(const fs::path& file) {
  std::vector<Host> out;
  toml::table doc;
  try {
    std::ifstream in(file);
    if (!in) return out;
    doc = toml::parse(in, file.string());
  } catch (const toml::parse_error&) {
    return out;  // a damaged cache is an empty one
  }
  const toml::array* hosts = doc["host"].as_array();
  if (!hosts) return out;
  for (const toml::node& host_node : *hosts) {
    const toml::table* ht = host_node.as_table();
    if (!ht) continue;
    Host h;
    h.id = (*ht)["id"].value_or(std::string());
    h.core = stamp_in(*ht, "core", "core_size", "core_mtime_ns");
    if (const toml::array* libraries = (*ht)["library"].as_array())
      for (const toml::node& node : *libraries) {
        const toml::table* t = node.as_table();
        if (!t) continue;
        const LibraryStamp s = stamp_in(*t, "path", "size", "mtime_ns");
        const std::optional<bool> ok = (*t)["ok"].value<bool>();
        if (s.path.empty() || s.size < 0 || !ok) continue;
        ProbeVerdict v;
        v.ok = *ok;
        v.reason = (*t)["reason"].value_or(std::string());
        v.description = (*t)["description"].value_or(std::string());
        if (const toml::array* entries = (*t)["entries"].as_array())
          for (const toml::node& e : *entries) v.entries.push_back(e.value_or(std::string()));
        h.entries[s.path] = {s, v};
      }
    out.push_back(std::move(h));
  }
  return out;
}

const ProbeVerdict* ProbeCache::find(const LibraryStamp& stamp) const {
  const auto it = host_.entries.find(stamp.path);
  return it != host_.entries.end() && it->second.first == stamp ? &it->second.second : nullptr;
}

void ProbeCache::put(const LibraryStamp& stamp, const ProbeVerdict& verdict) {
  host_.entries[stamp.path] = {stamp, verdict};
  changed_[stamp.path] = {stamp, verdict};
}

bool ProbeCache::save() const {
  std::error_code ec;
  fs::create_directories(file_.parent_path(), ec);
  // Read, merge and replace under a lock, so that processes saving at once keep each other's
  // verdicts (several points of a sweep may start with a cold cache).
  const int lock = ::open((file_.string() + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock < 0) return false;
  while (::flock(lock, LOCK_EX) != 0 && errno == EINTR) {
  }
  const bool saved = save_locked();
  ::close(lock);  // releases the lock
  return saved;
}

bool ProbeCache::save_locked() const {
  std::vector<Host> hosts = read(file_);
  auto mine = std::find_if(hosts.begin(), hosts.end(), [&](const Host& h) { return h.is(host_); });
  if (mine == hosts.end()) mine = hosts.insert(hosts.end(), Host{host_.id, host_.core, {}});
  for (const auto& [path, entry] : changed_) mine->entries[path] = entry;
  toml::array host_tables;
  for (const Host& h : hosts) {
    // Another host's section lasts while its libworkbench_core is unchanged.
    try {
      if (!h.is(host_) && !(stamp_of(h.core.path) == h.core)) continue;
    } catch (const fs::filesystem_error&) {
      continue;
    }
    toml::array libraries;
    for (const auto& [path, entry] : h.entries) {
      std::error_code ec;
      if (!fs::exists(path, ec)) continue;
      const auto& [stamp, verdict] = entry;
      toml::array entries;
      for (const auto& e : verdict.entries) entries.push_back(e);
      libraries.push_back(toml::table{{"path", stamp.path},
                                      {"size", stamp.size},
                                      {"mtime_ns", stamp.mtime_ns},
                                      {"ok", verdict.ok},
                                      {"reason", verdict.reason},
                                      {"description", verdict.description},
                                      {"entries", std::move(entries)}});
    }
    host_tables.push_back(toml::table{{"id", h.id},
                                      {"core", h.core.path},
                                      {"core_size", h.core.size},
                                      {"core_mtime_ns", h.core.mtime_ns},
                                      {"library", std::move(libraries)}});
  }
  const toml::table doc{{"host", std::move(host_tables)}};
  std::error_code ec;
  const fs::path tmp = file_.string() + "." + std::to_string(::getpid()) + ".tmp";
  {
    std::ofstream out(tmp);
    out << "# Verdicts of workbench plugin probes (workbench _probe); safe to delete.\n"
        << doc << "\n";
    if (!out.flush()) {
      fs::remove(tmp, ec);
      return false;
    }
  }
  fs::rename(tmp, file_, ec);
  if (!ec) return true;
  fs::remove(tmp, ec);
  return false;
}

}  // namespace wb
