// status.toml of a run directory: the state of one point as the parent (scheduler) and the
// child (the `_point` verb) see it. Always written atomically.
#pragma once

#include <cstdint>
#include <ctime>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace wb {

enum class RunState { Queued, Running, Done, Failed };
const char* state_name(RunState state);
std::optional<RunState> parse_state(const std::string& text);

struct RunStatus {
  RunState state = RunState::Queued;
  std::string error;   // failed: what went wrong ("exited with code 3", "killed by SIGKILL", ...)
  std::string signal;  // failed by a signal: its name ("SIGKILL")
  int exit_code = 0;   // failed with a non-zero exit: the code
  std::string started, finished;  // ISO 8601 UTC ("2024-05-01T12:00:00Z"); empty when unknown
  double elapsed_seconds = 0;     // time of all attempts that built on this point's checkpoint
  double resumed_seconds = 0;     // of those, the attempts before the current one
  std::int64_t pid = 0;
  std::int64_t step = 0, total_steps = 0;    // last progress seen
  std::vector<std::string> evaluators_done;  // plugin names whose results are in metrics.h5
};

// A missing file reads as a queued status; a malformed one throws naming the file.
RunStatus read_status(const std::filesystem::path& file);
void write_status(const std::filesystem::path& file, const RunStatus& status);
std::string format_status(const RunStatus& status);  // the TOML text written

// What status.toml keeps of an error message: one line, so that the summary table stays one
// line per point. LibTorch's stack trace ("Exception raised from ...", frames) is cut (it stays
// in run.log); other line breaks become spaces.
std::string status_error(const std::string& message);

// A time as ISO 8601 UTC ("2024-05-01T12:00:00Z"), and the current time so.
std::string iso8601(std::time_t time);
std::string now_iso8601();

// "SIGKILL" for SIGKILL, ...; "signal N" for one without a known name.
std::string signal_name(int signal);

}  // namespace wb
