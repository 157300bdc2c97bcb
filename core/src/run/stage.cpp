#include "run/stage.h"

#include <toml++/toml.h>

#include <stdexcept>

#include "cluster/cluster_run.h"
#include "cluster/deploy.h"
#include "eval/on_demand.h"
#include "process/verb_exit.h"
#include "store/atomic_file.h"
#include "store/run_dir.h"
#include "store/status.h"

namespace wb {

namespace {

template <typename T>
T required(const toml::table& t, const std::string& key, const std::filesystem::path& file) {
  const auto v = t[key].value<T>();
  if (!v) throw std::runtime_error(file.string() + ": missing or mistyped '" + key + "'");
  return *v;
}

int run_cluster(const toml::table& t, const std::filesystem::path& file,
                const PointOptions& options, std::ostream& err) {
  ClusterRequest request;
  request.dir = required<std::string>(t, "source", file);
  request.out = options.dir / "clusters.h5";
  request.threads = options.threads;
  request.plugin_paths = options.plugin_paths;
  ClusteringOptions& o = request.options;
  o.clusters = required<std::int64_t>(t, "clusters", file);
  o.epochs = required<std::int64_t>(t, "epochs", file);
  o.batch = required<std::int64_t>(t, "batch", file);
  o.lr = required<double>(t, "lr", file);
  o.momentum = required<double>(t, "momentum", file);
  o.weight_decay = required<double>(t, "weight_decay", file);
  o.iterations = required<std::int64_t>(t, "iterations", file);
  o.epsilon = required<double>(t, "epsilon", file);
  o.temperature = required<double>(t, "temperature", file);
  o.assignment = required<std::string>(t, "assignment", file);
  o.seed = static_cast<std::uint64_t>(required<std::int64_t>(t, "seed", file));
  return cluster_run(request, err);
}

int run_deploy(const toml::table& t, const std::filesystem::path& file, const PointOptions& options,
               std::ostream& err) {
  EvaluationRequest eval;
  eval.dir = options.dir;
  eval.threads = options.threads;
  eval.plugin_paths = options.plugin_paths;
  eval.holds_lock = true;  // this point process took it when it started
  // A rerun after a failed evaluator keeps the deployed model and runs what is missing.
  if (!std::filesystem::exists(options.dir / "deploy.toml")) {
    DeployRequest request;
    request.dir = required<std::string>(t, "source", file);
    request.data = required<std::string>(t, "data", file);
    request.out = options.dir;
    request.fold_gate = required<bool>(t, "fold_gate", file);
    request.threads = options.threads;
    request.plugin_paths = options.plugin_paths;
    if (const int rc = deploy_run(request, err); rc != 0) return rc;
    if (const toml::array* list = t["evaluators"].as_array())
      for (const auto& e : *list) eval.additions.push_back(e.value_or(std::string()));
  }
  return evaluate_on_demand(eval, err);
}

}  // namespace

std::vector<std::string> stage_command(const std::string& exe, const PointOptions& options) {
  std::vector<std::string> argv = {exe, "_stage", options.dir.string(), "--threads",
                                   std::to_string(options.threads)};
  for (const auto& p : options.plugin_paths) {
    argv.push_back("--plugin-path");
    argv.push_back(p);
  }
  return argv;
}

int stage_main(const PointOptions& options, std::ostream& err) {
  die_with_parent();
  const std::filesystem::path file = options.dir / "stage.toml";
  toml::table t;
  try {
    t = toml::parse(read_file(file), file.string());
  } catch (const toml::parse_error& e) {
    err << file.string() << ":" << e.source().begin.line << ": " << e.description() << "\n";
    return 2;
  } catch (const std::exception& e) {
    err << e.what() << "\n";
    return 2;
  }
  const std::string kind = t["kind"].value_or(std::string());
  RunStatus status;
  status.state = RunState::Running;
  status.started = now_iso8601();
  write_status(RunPaths(options.dir).status, status);
  try {
    if (kind == "cluster") return run_cluster(t, file, options, err);
    if (kind == "deploy") return run_deploy(t, file, options, err);
    err << file.string() << ": unknown kind '" << kind << "' (cluster or deploy)\n";
    return 2;
  } catch (...) {
    return verb_exit_code(err);
  }
}

}  // namespace wb
