// The optional [report] table of an experiment file: how the comparison report presents the
// experiment (which metric columns, display names, precision, title, baseline row).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config/error.h"  // ConfigError

namespace wb {

struct ReportSettings {
  std::vector<std::string> columns;          // metric columns "<evaluator>/<metric>", in order
  std::map<std::string, std::string> names;  // column id (metric or key) -> display name
  std::optional<int> precision;              // digits after the point of means (std: one more)
  std::string title;
  std::vector<std::pair<std::string, std::string>> baseline;  // key -> TOML literal
};

// What the report needs from an experiment file: its name and its [report] table.
struct ExperimentHeader {
  std::string name;  // [experiment].name; empty when absent
  ReportSettings report;
};

// Parses the experiment file's text (the copy runs/<experiment>/experiment.toml, or the file
// `workbench run` was given). Throws ConfigError naming `origin`, line and column when the
// text is not TOML or [report] is malformed (unknown key, wrong type, precision out of range).
ExperimentHeader parse_experiment_header(const std::string& text, const std::string& origin);

}  // namespace wb
