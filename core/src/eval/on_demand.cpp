#include "eval/on_demand.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "config/tree.h"
#include "config/validate.h"
#include "dist/communicator.h"
#include "eval/evaluate.h"
#include "h5/metrics.h"
#include "plugin/loader.h"
#include "process/logging.h"
#include "process/stop_signals.h"
#include "process/threads.h"
#include "store/atomic_file.h"
#include "store/point_lock.h"
#include "store/run_dir.h"
#include "store/status.h"
#include "train/checkpoint.h"
#include "train/data_access.h"
#include "train/model.h"
#include "workbench/registry.h"
#include "workbench/stop.h"

namespace wb {

namespace fs = std::filesystem;

namespace {

bool same_params(const Params& a, const Params& b) {
  if (a.values().size() != b.values().size()) return false;
  for (const auto& [key, value] : a.values())
    if (!b.has(key) || format_value(value) != format_value(b.at(key))) return false;
  return true;
}

// Adds the --add evaluators to the configuration (an identical one already listed is reused)
// and returns their names; `changed` tells whether config.toml must be rewritten.
std::vector<std::string> add_evaluators(RunConfig& config, const std::vector<std::string>& tables,
                                        const Registry& registry, bool& changed) {
  std::vector<std::string> names;
  for (const auto& text : tables) {
    const config::Node node = config::parse_value(text, "--add");
    // Addressed as in experiment files (evaluators.knn.k), so messages name the key.
    const config::Node* plugin = node.is_table() ? node.find("plugin") : nullptr;
    const std::string path =
        "evaluators" + (plugin && plugin->is_string() ? "." + plugin->text : std::string());
    PluginConfig pc = config::validate_plugin(node, Kind::Evaluator, registry, path);
    std::size_t index = config.evaluators.size();
    for (std::size_t i = 0; i < config.evaluators.size(); ++i)
      if (config.evaluators[i].plugin == pc.plugin &&
          same_params(config.evaluators[i].params, pc.params))
        index = i;
    if (index == config.evaluators.size()) {
      config.evaluators.push_back(std::move(pc));
      changed = true;
    }
    names.push_back(evaluator_names(config)[index]);
  }
  return names;
}

void add_unique(std::vector<std::string>& list, const std::string& name) {
  if (std::find(list.begin(), list.end(), name) == list.end()) list.push_back(name);
}

bool process_alive(std::int64_t pid) {
  return pid > 0 && ::kill(static_cast<pid_t>(pid), 0) == 0;
}

}  // namespace

int evaluate_on_demand(const EvaluationRequest& request, std::ostream& err) {
  const bool force = request.force;
  const RunPaths paths(request.dir);
  if (!fs::is_regular_file(paths.config)) {
    err << "error: " << paths.config.string() << " not found: not a run directory\n";
    return 2;
  }
  const fs::path checkpoint = paths.checkpoints / "last.pt";
  if (!fs::is_regular_file(checkpoint)) {
    err << "error: " << checkpoint.string()
        << " not found: the run has not trained yet (run it with 'workbench run')\n";
    return 2;
  }
  RunStatus status = read_status(paths.status);
  if (status.state == RunState::Running && process_alive(status.pid)) {
    err << "error: " << paths.dir.string() << " is running (pid " << status.pid
        << "); evaluate it when it has finished\n";
    return 2;
  }
  // The point's lock, as a trainer holds it: one writer of metrics.h5 and status.toml at a time.
  PointLock lock;
  if (!request.holds_lock) {
    lock = PointLock::try_acquire(paths.dir);
    if (!lock.held()) {
      err << "error: " << paths.dir.string() << " is in use by " << lock.holder()
          << " (a trainer, or another 'workbench eval'); evaluate it when that has ended\n";
      return 2;
    }
  }

  Registry registry;
  const PluginLoader loader = load_plugins(registry, request.plugin_paths);
  for (const auto& f : loader.failures())
    err << "warning: plugin library " << f.path << " not loaded: " << f.reason << "\n";
  RunConfig config;
  std::vector<std::string> selected = request.only;
  try {
    config = load_run_config(paths.config, registry);
    for (const auto& note : config.migrated) err << "warning: " << note << "\n";
    bool changed = false;
    for (const auto& name : add_evaluators(config, request.additions, registry, changed))
      add_unique(selected, name);
    if (changed) {
      config.toml = canonical_toml(config);
      write_file_atomic(paths.config, config.toml);
    }
  } catch (const ConfigError& e) {
    err << e.what() << "\n";
    return 2;
  }
  const auto names = evaluator_names(config);
  for (const auto& name : selected)
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      err << "error: no evaluator named '" << name << "' in " << paths.config.string() << " ("
          << (names.empty() ? "it has none" : "it has " + config::join(names))
          << "; --add runs another)\n";
      return 2;
    }

  const int threads = resolve_threads(request.threads, config.settings.run.threads);
  use_threads(threads);

  const RunLog run_log = open_run_log(paths.log, "eval");
  spdlog::logger* log = run_log.log.get();
  try {
    // What to run, decided before the model is built: often nothing.
    std::set<std::string> done;
    if (fs::exists(paths.metrics))
      for (const auto& [name, metrics] : MetricsReader(paths.metrics).eval()) done.insert(name);
    std::vector<std::string> todo;
    for (const auto& name : selected.empty() ? names : selected) {
      if (!done.count(name) || force)
        todo.push_back(name);
      else
        log->info("evaluator {} already done (--force reruns it)", name);
    }
    if (todo.empty()) {
      log->info("nothing to evaluate: the results are in metrics.h5 already");
      return 0;
    }

    const c10::Device device = pick_device(config.settings.run.device);
    auto train_data = open_data(config.settings.data, Split::Train);
    const DataShape shape{train_data->channels(), train_data->image_size(), train_data->classes()};
    auto comm = make_single_process_communicator();
    Model model = build_model(config, registry, shape, comm.get());
    CheckpointState state = checkpoint_state(model);
    const std::int64_t step = load_checkpoint(checkpoint, state);
    model.to(device);
    log->info("eval {}: checkpoint step {}, {} threads, device {}", paths.dir.string(), step,
              threads, device.str());
    if (status.state != RunState::Done)
      log->warn("the run is {}: evaluating its last checkpoint (step {} of {})",
                state_name(status.state), step, status.total_steps);

    MetricsFile metrics(paths.metrics);
    Evaluation evaluation;
    evaluation.dir = paths.dir;
    evaluation.config = &config;
    evaluation.registry = &registry;
    evaluation.metrics = &metrics;
    evaluation.log = log;
    evaluation.threads = threads;
    evaluation.cache_tag = "step" + std::to_string(step);
    evaluation.only = todo;
    evaluation.force = force;
    evaluation.keep_going = true;
    evaluation.on_done = [&](const std::string& name) {
      add_unique(status.evaluators_done, name);
      write_status(paths.status, status);
    };
    stop_on_signals();  // Ctrl-C: metrics.h5 closed, not killed halfway through a write
    const auto ran = evaluate_point(evaluation, model, device);
    metrics.flush();
    log->info("evaluated: {}", config::join(ran));
    return 0;
  } catch (const Interrupted& e) {
    log->error("{}; the evaluators that finished before are in metrics.h5", e.what());
    return 130;
  } catch (const std::exception& e) {
    log->error("{}", e.what());
    return 1;
  }
}

}  // namespace wb
