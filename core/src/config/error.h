// The error every configuration problem becomes: it names the file (or the --set / --profile
// argument), the line and the column of the offending TOML node, and what is wrong.
#pragma once

#include <stdexcept>
#include <string>

namespace wb {

// A configuration error with its place: "file:line:column: message". Names get the valid
// choices appended ("unknown key 'epochz' in train; did you mean 'epochs'? (valid: ...)").
// line == 0 means the place has no line (e.g. "--set train.epochs=x: message").
class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string file, int line, int column, const std::string& message);
  const std::string file;
  const int line, column;
  const std::string message;  // without the place
};

}  // namespace wb
