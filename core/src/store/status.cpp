#include "store/status.h"

#include <string.h>  // sigabbrev_np
#include <toml++/toml.h>

#include <csignal>
#include <cstdio>
#include <ctime>
#include <sstream>
#include <stdexcept>

#include "store/atomic_file.h"
#include "workbench/params.h"  // toml_string

namespace wb {

const char* state_name(RunState state) {
  switch (state) {
    case RunState::Queued:
      return "queued";
    case RunState::Running:
      return "running";
    case RunState::Done:
      return "done";
    case RunState::Failed:
      return "failed";
  }
  return "?";
}

std::optional<RunState> parse_state(const std::string& text) {
  for (RunState s : {RunState::Queued, RunState::Running, RunState::Done, RunState::Failed})
    if (text == state_name(s)) return s;
  return std::nullopt;
}

std::string format_status(const RunStatus& status) {
  std::string out = "state = " + toml_string(state_name(status.state)) + "\n";
  auto line = [&](const char* key, const std::string& value) {
    out += std::string(key) + " = " + value + "\n";
  };
  if (!status.error.empty()) line("error", toml_string(status.error));
  if (!status.signal.empty()) line("signal", toml_string(status.signal));
  if (status.exit_code != 0) line("exit_code", std::to_string(status.exit_code));
  if (!status.started.empty()) line("started", toml_string(status.started));
  if (!status.finished.empty()) line("finished", toml_string(status.finished));
  auto seconds = [&](const char* key, double value) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3f", value);
    line(key, text);
  };
  seconds("elapsed_seconds", status.elapsed_seconds);
  if (status.resumed_seconds > 0) seconds("resumed_seconds", status.resumed_seconds);
  if (status.pid != 0) line("pid", std::to_string(status.pid));
  line("step", std::to_string(status.step));
  line("total_steps", std::to_string(status.total_steps));
  std::string evaluators;
  for (const auto& e : status.evaluators_done)
    evaluators += (evaluators.empty() ? "" : ", ") + toml_string(e);
  line("evaluators_done", "[" + evaluators + "]");
  return out;
}

void write_status(const std::filesystem::path& file, const RunStatus& status) {
  write_file_atomic(file, format_status(status));
}

RunStatus read_status(const std::filesystem::path& file) {
  RunStatus status;
  if (!std::filesystem::exists(file)) return status;
  const std::string text = read_file(file);
  toml::table t;
  try {
    t = toml::parse(text, file.string());
  } catch (const toml::parse_error& e) {
    std::ostringstream message;
    message << file.string() << ":" << e.source().begin.line << ":" << e.source().begin.column
            << ": " << e.description();
    throw std::runtime_error(message.str());
  }
  auto bad = [&](const std::string& what) {
    return std::runtime_error(file.string() + ": " + what);
  };
  const std::string state = t["state"].value_or(std::string());
  const auto parsed = parse_state(state);
  if (!parsed) throw bad("unknown state '" + state + "' (valid: queued, running, done, failed)");
  status.state = *parsed;
  status.error = t["error"].value_or(std::string());
  status.signal = t["signal"].value_or(std::string());
  status.exit_code = static_cast<int>(t["exit_code"].value_or(std::int64_t{0}));
  status.started = t["started"].value_or(std::string());
  status.finished = t["finished"].value_or(std::string());
  status.elapsed_seconds = t["elapsed_seconds"].value_or(0.0);
  status.resumed_seconds = t["resumed_seconds"].value_or(0.0);
  status.pid = t["pid"].value_or(std::int64_t{0});
  status.step = t["step"].value_or(std::int64_t{0});
  status.total_steps = t["total_steps"].value_or(std::int64_t{0});
  if (const toml::array* list = t["evaluators_done"].as_array()) {
    for (const auto& node : *list) {
      const auto name = node.value<std::string>();
      if (!name) throw bad("evaluators_done must hold strings");
      status.evaluators_done.push_back(*name);
    }
  }
  return status;
}

std::string now_iso8601() {
  return iso8601(std::time(nullptr));
}

std::string status_error(const std::string& message) {
  const auto trace = message.find("\nException raised from ");
  std::string out;
  std::istringstream lines(message.substr(0, trace));
  for (std::string line; std::getline(lines, line);) {
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos) continue;
    const auto last = line.find_last_not_of(" \t\r");
    out += (out.empty() ? "" : " ") + line.substr(first, last - first + 1);
  }
  if (trace != std::string::npos) out += " [LibTorch's stack trace is in run.log]";
  return out;
}

std::string iso8601(std::time_t time) {
  std::tm utc{};
  gmtime_r(&time, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

std::string signal_name(int signal) {
  const char* abbreviation = sigabbrev_np(signal);  // glibc: "KILL" for SIGKILL
  return abbreviation ? std::string("SIG") + abbreviation : "signal " + std::to_string(signal);
}

}  // namespace wb
