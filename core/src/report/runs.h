// Reading an experiment directory (runs/<experiment>) for a report: every point's files
// (point.toml, status.toml, config.toml, metrics.h5, eval/*.png), grouped by their
// assignments without the seed. Nothing here throws for one bad point: it is recorded as a
// problem of that point and the others are read.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "h5/metrics.h"
#include "report/settings.h"
#include "store/status.h"

namespace wb {

namespace config {
struct Node;
}

struct PointRun {
  std::filesystem::path dir;
  std::string id, label;
  std::int64_t seed = 0;
  std::vector<std::pair<std::string, std::string>> assignments;  // without the seed
  RunStatus status;
  std::string problem;           // a file of the point that could not be read; empty when none
  bool point_file_read = false;  // point.toml read: seed and assignments are known
  // Read from metrics.h5 of done points only (a failed point's metrics are left out):
  std::map<std::string, double> scalars;               // "<evaluator>/<metric>" scalars
  std::map<std::string, std::vector<double>> vectors;  // "<evaluator>/<metric>" 1-D arrays
  std::map<std::string, Series> curves;       // train/loss, loss/*, routing/moe<i>/load_entropy,
                                              // routing/moe<i>/expert_load (its last row only)
  std::vector<std::filesystem::path> images;  // PNGs under eval/, sorted

  bool done() const { return status.state == RunState::Done && problem.empty(); }
};

struct Group {
  std::vector<std::pair<std::string, std::string>> assignments;  // key -> TOML literal
  std::vector<PointRun> points;                                  // sorted by seed
  std::shared_ptr<const config::Node> config;  // the first readable config.toml, if any

  // The TOML literal of `key` for this group: its assignment, else the value in its resolved
  // configuration (a key another group varies), else "".
  std::string value(const std::string& key) const;
  std::size_t done() const;
  std::size_t failed() const;
};

struct ExperimentRuns {
  std::string name;
  std::filesystem::path dir;
  ReportSettings settings;
  std::vector<std::string> keys;     // assignment keys (no seed), in order of first appearance
  std::vector<std::string> varied;   // those whose value differs between groups
  std::vector<Group> groups;         // sorted by the varied keys' values
  std::vector<PointRun> unreadable;  // points whose point.toml could not be read: no group
  std::vector<std::string> warnings;

  std::size_t point_count() const;
  // "α=0.3, λ=0.2" (display names of the varied keys); "all points" without varied keys.
  std::string group_label(const Group& group) const;
  std::string display_name(const std::string& column) const;  // [report].names or the id
};

struct PointCounts {
  std::size_t total = 0, done = 0, failed = 0, unfinished = 0;  // unreadable ones count as failed
};
PointCounts count_points(const ExperimentRuns& runs);
// "3 points in 1 configuration; 2 done, 1 failed, 0 not finished." for the report's summary.
std::string counts_sentence(const ExperimentRuns& runs);

// Points that are not done, or whose files could not be read, in group order (unreadable last).
std::vector<const PointRun*> unfinished_points(const ExperimentRuns& runs);
// Why a point has no results: "failed: exited with code 3", "running (step 40 of 100)", ...
std::string point_problem(const PointRun& point);

// Reads runs/<experiment>. Throws if `dir` is not a directory, holds no point (no
// <id>/point.toml), or its experiment.toml has a malformed [report] table.
ExperimentRuns load_experiment_runs(const std::filesystem::path& dir);

// What a TOML literal shows as in a table: strings without quotes, { plugin = "x" } as x,
// anything else as written.
std::string display_value(const std::string& literal);

// Orders literals: numerically when both are numbers, else by their display text.
bool value_less(const std::string& a, const std::string& b);

// The number a literal holds, if it is an integer or a float.
bool numeric_value(const std::string& literal, double& out);

}  // namespace wb
