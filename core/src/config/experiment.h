// Experiment files: [experiment], [base], [grid], [zip.NAME], [[point]], [[exclude]],
// [profile.NAME]. Expands them into points and validates every point before anything runs.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "config/error.h"  // ConfigError
#include "config/point_checks.h"
#include "config/run_config.h"

namespace wb {

struct Point {
  std::string id;  // 12 hex digits (design.md)
  std::int64_t seed = 0;
  std::vector<std::pair<std::string, std::string>> assignments;  // key -> TOML literal, in order
  std::string label;                                             // "losses.ogar.alpha=0.3 seed=1"
  RunConfig config;  // a training point's; empty for the other kinds
  // Stages (docs/design.md, "Stages"): the [stage.NAME] the point belongs to ("" without
  // stages), what it does, and the ids of the earlier points it uses (its "@stage" references).
  std::string stage;
  std::string kind = "train";  // train | cluster | deploy
  std::string task;            // cluster, deploy: stage.toml, what `workbench _stage` runs
  std::vector<std::string> needs;
};

// One [stage.NAME] of an experiment file, in the order the stages run.
struct Stage {
  std::string name, kind;
  std::vector<std::string> after;   // the stages it depends on (after = ..., and "@" references)
  std::vector<std::string> varied;  // the keys that differ between its points
};

// The most points (grid combinations and [[point]]s, times seeds, before [[exclude]]) an
// experiment may define: past it the file is refused before any point is built, instead of
// running out of memory expanding it.
constexpr std::size_t kMaxExperimentPoints = 100000;

struct Experiment {
  std::string name;
  std::string file;                 // the experiment file as given
  std::string source;               // its text
  std::vector<std::string> varied;  // keys that differ between points (report columns)
  std::vector<Point> points;

  // How the points came about, for the --dry-run summary:
  // points = (grid_points + explicit_points) x seeds - excluded - duplicates.
  std::size_t grid_points = 1;      // product of the [grid] and [zip.*] axes (1 without any)
  std::size_t explicit_points = 0;  // [[point]] tables
  std::vector<std::int64_t> seeds;
  std::size_t excluded = 0;    // dropped by [[exclude]]
  std::size_t duplicates = 0;  // dropped because an earlier point had the same id

  std::vector<Stage> stages;  // empty: a file without [stage.*]; points are in stage order
};

struct ExperimentOptions {
  std::vector<std::string> overrides;  // --set key=value, applied to [base] before expansion
  std::string profile;                 // --profile NAME: apply [profile.NAME] first
  // Also expand and validate the file under each of its other [profile.*] tables, so that a
  // typo or an impossible value in a profile is found before the profile is first used.
  bool check_profiles = true;
  // What the point checks learn from the host: data set shapes, CUDA devices
  // (run/host_environment.h); unset parts are not checked.
  PointEnvironment environment{};
  // Where run directories go (`workbench run --runs-dir`): a "@stage" reference resolves to
  // <runs_dir>/<experiment>/<id> of the earlier point, as given (relative stays relative).
  std::string runs_dir = "runs";
};

// Order: [profile.NAME], then --set overrides, then grid x zip plus [[point]]s, each for every
// seed (seeds outermost), then [[exclude]]. Every remaining point is validated: its schemas,
// then each plugin's own checks over the resolved values and the run's shapes
// (config/point_checks.h).
// Throws ConfigError naming file, line and column for the first problem found.
Experiment load_experiment(const std::string& file, const Registry& registry,
                           const ExperimentOptions& options = {});
// The same for text already read; `file` names it in errors and in Experiment::file.
Experiment parse_experiment(const std::string& text, const std::string& file,
                            const Registry& registry, const ExperimentOptions& options = {});

// Keeps only the point `id` names: its full id or a prefix matching exactly one point. Throws
// naming the ids when none or several match.
void keep_only_point(Experiment& experiment, const std::string& id);
// `--shard I/N`: keeps the points whose index i (in the experiment's order) has i mod N == I,
// the static split of a sweep between N jobs (docs/scale.md). Throws on a malformed shard.
void keep_shard(Experiment& experiment, const std::string& shard);

// The --dry-run table: one row per point with id, seed and the varied keys.
std::string format_points_table(const Experiment& experiment);

}  // namespace wb
