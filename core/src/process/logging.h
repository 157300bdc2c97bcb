// The log of a point or of an evaluation: run.log (spdlog) plus the console.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

namespace spdlog {
class logger;
}

namespace wb {

struct RunLog {
  std::shared_ptr<spdlog::logger> log;        // run.log (and the console)
  std::shared_ptr<spdlog::logger> file_only;  // run.log alone: lines the console shows otherwise
};

// Appends to `file`, every message flushed at once (the process may be killed at any time),
// and writes to stderr too unless `console` is false. `log` becomes spdlog's default logger,
// so code that logs through spdlog:: lands in the same file.
RunLog open_run_log(const std::filesystem::path& file, const std::string& name,
                    bool console = true);

}  // namespace wb
