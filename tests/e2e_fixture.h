// Helpers of the end-to-end tests, which run the real `workbench` executable (WB_WORKBENCH_EXE)
// on small experiments: its command line, its exit code and output, processes started and
// waited for, the point directories a run leaves (and the experiment texts of fixture_toml.h).
#pragma once

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "fixture_toml.h"  // the experiments they run

namespace wbtest {

// The test plugins' folder (tiny_moe, nan_at), for --plugin-path.
inline const std::string kTestPlugins = WB_E2E_PLUGIN_DIR;

inline std::string slurp(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Occurrences of `what` in `text` (overlapping ones too).
inline int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// `workbench ARGS` (shell words); with `plugin_path` (a folder or a library) added to the
// plugins found beside the executable.
inline std::string workbench_command(const std::string& args, const std::string& plugin_path = "") {
  std::string command = std::string(WB_WORKBENCH_EXE) + " " + args;
  if (!plugin_path.empty()) command += " --plugin-path " + plugin_path;
  return command;
}

// Exit code and output (stdout and stderr together, through scratch/out.txt) of a shell
// command that must exit, not die from a signal.
inline std::pair<int, std::string> run_shell(const std::string& command,
                                             const std::filesystem::path& scratch) {
  const std::filesystem::path out = scratch / "out.txt";
  const int status = std::system((command + " > " + out.string() + " 2>&1").c_str());
  REQUIRE(WIFEXITED(status));
  return {WEXITSTATUS(status), slurp(out)};
}

inline std::pair<int, std::string> workbench(const std::string& args,
                                             const std::filesystem::path& scratch,
                                             const std::string& plugin_path = "") {
  return run_shell(workbench_command(args, plugin_path), scratch);
}

// Starts `sh -c COMMAND` as a child (the shell replaced by the command); its output goes to
// `out`.
inline pid_t start(const std::string& command, const std::filesystem::path& out) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const std::string c = "exec " + command + " > " + out.string() + " 2>&1";
    execl("/bin/sh", "sh", "-c", c.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// Waits for a child of start(): its exit code, or 128 + the signal that ended it.
inline int finish(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Whether a process exists (also one this process may not signal).
inline bool alive(pid_t pid) {
  return kill(pid, 0) == 0 || errno == EPERM;
}

// Polls `done` every 50 ms until it holds or `seconds` pass; returns whether it held.
inline bool wait_until(const std::function<bool()>& done, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

// The point directories of an experiment's runs directory.
inline std::vector<std::filesystem::path> point_dirs(const std::filesystem::path& exp_dir) {
  std::vector<std::filesystem::path> out;
  for (const auto& e : std::filesystem::directory_iterator(exp_dir))
    if (std::filesystem::exists(e.path() / "point.toml")) out.push_back(e.path());
  return out;
}

// The point directory whose point.toml (its label, its values) contains `label_word`.
inline std::filesystem::path point_with(const std::filesystem::path& exp_dir,
                                        const std::string& label_word) {
  for (const auto& point : point_dirs(exp_dir))
    if (slurp(point / "point.toml").find(label_word) != std::string::npos) return point;
  FAIL("no point labelled with " << label_word << " in " << exp_dir);
  return {};
}

// The run directory (one with a config.toml) of an experiment of one point.
inline std::filesystem::path only_run(const std::filesystem::path& exp_dir) {
  std::filesystem::path run;
  for (const auto& e : std::filesystem::directory_iterator(exp_dir))
    if (std::filesystem::exists(e.path() / "config.toml")) run = e.path();
  REQUIRE_FALSE(run.empty());
  return run;
}

// Polls `exp_dir` every 100 ms for a point directory with a checkpoint for which `ready` holds
// (when given); empty if none does within `seconds`.
inline std::filesystem::path wait_for_checkpoint(
    const std::filesystem::path& exp_dir, int seconds,
    const std::function<bool(const std::filesystem::path&)>& ready = {}) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    std::filesystem::path point;
    if (std::filesystem::exists(exp_dir))
      for (const auto& e : std::filesystem::directory_iterator(exp_dir))
        if (std::filesystem::exists(e.path() / "checkpoints" / "last.pt")) point = e.path();
    if (!point.empty() && (!ready || ready(point))) return point;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return {};
}

}  // namespace wbtest
