// What the configuration tests share: a registry of the fake plugins, a configuration error's
// parts and the position of a piece of text, found independently of TOML++.
#pragma once

#include <doctest/doctest.h>

#include <cstddef>
#include <string>
#include <utility>

#include "config/error.h"
#include "config_test_registry.h"

namespace wb::test {

// The registry of the fake plugins (config_test_registry.h) a test's fixture parses with.
struct FakePlugins {
  wb::Registry registry;
  FakePlugins() { add_fake_plugins(registry); }
};

// A configuration error as the tests inspect it.
struct Caught {
  std::string what, file, message;
  int line = -1, column = -1;
};

// The ConfigError that `f` throws; fails the test when it throws none.
template <class F>
Caught config_error(F f) {
  try {
    f();
  } catch (const wb::ConfigError& e) {
    return Caught{e.what(), e.file, e.message, e.line, e.column};
  }
  FAIL("expected a ConfigError");
  return {};
}

// Line and column (1-based) of the first occurrence of `needle` at or after `from`.
inline std::pair<int, int> position(const std::string& text, const std::string& needle,
                                    std::size_t from = 0) {
  const std::size_t at = text.find(needle, from);
  REQUIRE(at != std::string::npos);
  int line = 1;
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < at; ++i)
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  return {line, static_cast<int>(at - line_start) + 1};
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace wb::test
