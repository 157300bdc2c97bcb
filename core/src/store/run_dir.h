// The run store on disk (docs/design.md, "Run directory"): where an experiment's points live,
// and the files that describe a point before it runs.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config/experiment.h"
#include "store/status.h"

namespace wb {

// runs/<experiment>; throws if the name cannot be a directory name.
std::filesystem::path experiment_dir(const std::filesystem::path& runs_dir,
                                     const std::string& experiment);

// The files of one point's directory (runs/<experiment>/<id>).
struct RunPaths {
  explicit RunPaths(std::filesystem::path dir);
  std::filesystem::path dir, config, point, status, log, metrics, checkpoints, eval;
};

// Writes runs/<experiment>/experiment.toml, the experiment file's text as run, and
// points.toml, the ids of the points it defines (after --profile and --set): a report leaves
// out point directories an earlier version of the file made.
void write_experiment_copy(const std::filesystem::path& runs_dir, const Experiment& experiment);

// The ids in runs/<experiment>/points.toml; nullopt when the file is absent (runs made before
// it existed: every point directory counts).
std::optional<std::vector<std::string>> read_current_point_ids(const std::filesystem::path& dir);

// Creates the point's directory and writes config.toml (the resolved configuration) and
// point.toml (experiment, id, seed, label, assignments). Both are rewritten on every run: the
// evaluator list may have changed without changing the id.
void prepare_point_dir(const std::filesystem::path& dir, const Experiment& experiment,
                       const Point& point);

// point.toml: its text, and the file read back.
struct PointFile {
  std::string experiment, id, label;
  std::int64_t seed = 0;
  std::vector<std::pair<std::string, std::string>> assignments;  // key -> TOML literal, in order
};
std::string format_point_file(const Experiment& experiment, const Point& point);
PointFile read_point_file(const std::filesystem::path& file);

// The names under which evaluators are recorded: status.toml's evaluators_done and the
// groups /eval/<name> of metrics.h5.
std::vector<std::string> evaluator_names(const RunConfig& config);

// True when the point needs no work: done, and every configured evaluator done.
bool point_complete(const RunStatus& status, const RunConfig& config);

}  // namespace wb
