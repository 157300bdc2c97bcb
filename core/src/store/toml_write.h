// Writing small TOML files by hand (status.toml, point.toml): TOML++ would print 0.1 as
// 0.10000000000000001 and strings in single quotes; these files are read by people too.
#pragma once

#include <string>

namespace wb {

// A TOML basic string: "text" with quotes, backslashes and control characters escaped.
std::string toml_string(const std::string& text);

}  // namespace wb
