// Experiment files: [experiment], [base], [grid], [zip.NAME], [[point]], [[exclude]],
// [profile.NAME]. Expands them into points and validates every point before anything runs.
#pragma once

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/run_config.h"

namespace wb {

// A configuration error with its place: "file:line:column: message". Names get the valid
// choices appended ("unknown key 'epochz' in [base.train] (valid: batch, epochs, ...)").
class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string file, int line, int column, const std::string& message);
  const std::string file;
  const int line, column;
};

struct Point {
  std::string id;                                 // 12 hex digits (design.md)
  std::int64_t seed = 0;
  std::vector<std::pair<std::string, std::string>> assignments;  // key -> TOML literal, in order
  std::string label;                              // "losses.ogar.alpha=0.3 seed=1"
  RunConfig config;
};

struct Experiment {
  std::string name;
  std::string file;                 // the experiment file as given
  std::string source;               // its text
  std::vector<std::string> varied;  // keys that differ between points (report columns)
  std::vector<Point> points;
};

struct ExperimentOptions {
  std::vector<std::string> overrides;  // --set key=value, applied to [base] before expansion
  std::string profile;                 // --profile NAME: apply [profile.NAME] first
};

// Throws ConfigError naming file, line and column for the first problem found.
Experiment load_experiment(const std::string& file, const Registry& registry,
                           const ExperimentOptions& options = {});

// The --dry-run table: one row per point with id, seed and the varied keys.
std::string format_points_table(const Experiment& experiment);

}  // namespace wb
