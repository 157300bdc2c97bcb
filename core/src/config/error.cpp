#include "config/error.h"

namespace wb {

namespace {
std::string place(const std::string& file, int line, int column) {
  if (line <= 0) return file;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}
}  // namespace

ConfigError::ConfigError(std::string file_, int line_, int column_, const std::string& message_)
    : std::runtime_error(place(file_, line_, column_) + ": " + message_),
      file(std::move(file_)),
      line(line_),
      column(column_),
      message(message_) {}

}  // namespace wb
