#include "store/run_dir.h"

#include <toml++/toml.h>
#include <algorithm>
#include <map>
#include <sstream>
#include <stdexcept>

#include "store/atomic_file.h"
#include "workbench/params.h"  // toml_string

namespace wb {

std::filesystem::path experiment_dir(const std::filesystem::path& runs_dir,
                                     const std::string& experiment) {
  if (experiment.empty() || experiment == "." || experiment == ".." ||
      experiment.find('/') != std::string::npos)
    throw std::runtime_error("experiment name '" + experiment +
                             "' cannot be used as a directory name");
  return runs_dir / experiment;
}

RunPaths::RunPaths(std::filesystem::path d)
    : dir(std::move(d)),
      config(dir / "config.toml"),
      point(dir / "point.toml"),
      status(dir / "status.toml"),
      log(dir / "run.log"),
      metrics(dir / "metrics.h5"),
      checkpoints(dir / "checkpoints"),
      eval(dir / "eval") {}

void write_experiment_copy(const std::filesystem::path& runs_dir, const Experiment& experiment) {
  const std::filesystem::path dir = experiment_dir(runs_dir, experiment.name);
  write_file_atomic(dir / "experiment.toml", experiment.source);
  std::string ids = "# the points experiment.toml defines, as last run\nids = [\n";
  for (const Point& p : experiment.points) ids += "  " + toml_string(p.id) + ",\n";
  write_file_atomic(dir / "points.toml", ids + "]\n");
}

std::optional<std::vector<std::string>> read_current_point_ids(const std::filesystem::path& dir) {
  const std::filesystem::path file = dir / "points.toml";
  if (!std::filesystem::exists(file)) return std::nullopt;
  toml::table t;
  try {
    t = toml::parse(read_file(file), file.string());
  } catch (const toml::parse_error& e) {
    throw std::runtime_error(file.string() + ":" + std::to_string(e.source().begin.line) + ": " +
                             std::string(e.description()));
  }
  const toml::array* list = t["ids"].as_array();
  if (!list) throw std::runtime_error(file.string() + ": no list 'ids'");
  std::vector<std::string> ids;
  for (const auto& node : *list) {
    const auto id = node.value<std::string>();
    if (!id) throw std::runtime_error(file.string() + ": 'ids' must hold strings");
    ids.push_back(*id);
  }
  return ids;
}

std::string format_point_file(const Experiment& experiment, const Point& point) {
  std::string out =
      "experiment = " + toml_string(experiment.name) + "\n" + "id = " + toml_string(point.id) +
      "\n" + "seed = " + std::to_string(point.seed) + "\n" + "label = " + toml_string(point.label) +
      "\n" + "# [key, value as written], in the order applied\n" + "assignments = [\n";
  // A stage's points are told apart in the report by their stage (docs/design.md, "Stages").
  if (!point.stage.empty())
    out += "  [\"stage\", " + toml_string(toml_string(point.stage)) + "],\n";
  for (const auto& [key, literal] : point.assignments)
    out += "  [" + toml_string(key) + ", " + toml_string(literal) + "],\n";
  return out + "]\n";
}

void prepare_point_dir(const std::filesystem::path& dir, const Experiment& experiment,
                       const Point& point) {
  const RunPaths paths(dir);
  std::filesystem::create_directories(dir);
  // A cluster or deploy point has no configuration of its own: `workbench _stage` reads its
  // task (the deployed model's config.toml is written by the deployment).
  if (point.kind == "train")
    write_file_atomic(paths.config, point.config.toml);
  else
    write_file_atomic(dir / "stage.toml", point.task);
  write_file_atomic(paths.point, format_point_file(experiment, point));
}

PointFile read_point_file(const std::filesystem::path& file) {
  toml::table t;
  try {
    t = toml::parse(read_file(file), file.string());
  } catch (const toml::parse_error& e) {
    std::ostringstream message;
    message << file.string() << ":" << e.source().begin.line << ":" << e.source().begin.column
            << ": " << e.description();
    throw std::runtime_error(message.str());
  }
  PointFile out;
  out.experiment = t["experiment"].value_or(std::string());
  out.id = t["id"].value_or(std::string());
  out.label = t["label"].value_or(std::string());
  out.seed = t["seed"].value_or(std::int64_t{0});
  if (const toml::array* list = t["assignments"].as_array()) {
    for (const auto& entry : *list) {
      const toml::array* pair = entry.as_array();
      if (!pair || pair->size() != 2 || !pair->get(0)->is_string() || !pair->get(1)->is_string())
        throw std::runtime_error(file.string() + ": assignments must be [key, value] string pairs");
      out.assignments.emplace_back(pair->get(0)->value_or(std::string()),
                                   pair->get(1)->value_or(std::string()));
    }
  }
  return out;
}

std::vector<std::string> evaluator_names(const RunConfig& config) {
  // The plugin name, numbered when the same plugin is listed twice: "knn", "knn_2".
  std::vector<std::string> names;
  std::map<std::string, int> seen;
  for (const auto& e : config.evaluators) {
    const int n = ++seen[e.plugin];
    names.push_back(n == 1 ? e.plugin : e.plugin + "_" + std::to_string(n));
  }
  return names;
}

bool point_complete(const RunStatus& status, const RunConfig& config) {
  if (status.state != RunState::Done) return false;
  for (const auto& name : evaluator_names(config))
    if (std::find(status.evaluators_done.begin(), status.evaluators_done.end(), name) ==
        status.evaluators_done.end())
      return false;
  return true;
}

}  // namespace wb
