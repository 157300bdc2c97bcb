#include "process/logging.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace wb {

RunLog open_run_log(const std::filesystem::path& file, const std::string& name, bool console) {
  auto file_sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file.string(), false);
  file_sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
  RunLog out;
  if (console) {
    auto terminal = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    terminal->set_pattern("[%H:%M:%S] [%^%l%$] %v");
    out.log = std::make_shared<spdlog::logger>(name, spdlog::sinks_init_list{file_sink, terminal});
  } else {
    out.log = std::make_shared<spdlog::logger>(name, file_sink);
  }
  out.file_only = std::make_shared<spdlog::logger>(name + "-file", file_sink);
  for (auto* l : {out.log.get(), out.file_only.get()}) {
    l->set_level(spdlog::level::debug);
    l->flush_on(spdlog::level::debug);
  }
  spdlog::set_default_logger(out.log);
  return out;
}

}  // namespace wb
