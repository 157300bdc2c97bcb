// `workbench eval RUN_DIR [--evaluator NAME]... [--add TABLE]... [--force] [--threads N]
// [--plugin-path P]...`: evaluates a run's last checkpoint again. Rebuilds the model from
// config.toml, loads checkpoints/last.pt, runs the evaluators whose results are missing from
// metrics.h5 (or the named ones, or all with --force, or extra ones given inline), writes the
// results into metrics.h5 and records them in status.toml's evaluators_done.
#include <ATen/Parallel.h>
#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cstdlib>
#include <iostream>
#include <set>
#include <thread>

#include "cli/cli.h"
#include "config/tree.h"
#include "config/validate.h"
#include "dist/communicator.h"
#include "h5/metrics.h"
#include "plugin/loader.h"
#include "store/atomic_file.h"
#include "store/run_dir.h"
#include "store/status.h"
#include "train/checkpoint.h"
#include "train/data_access.h"
#include "train/model.h"
#include "train/run_evaluators.h"
#include "workbench/registry.h"

namespace wb::cli {

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

std::shared_ptr<spdlog::logger> make_log(const fs::path& file) {
  auto file_sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file.string(), false);
  file_sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  console->set_pattern("[%H:%M:%S] [%^%l%$] %v");
  auto log = std::make_shared<spdlog::logger>("eval", spdlog::sinks_init_list{file_sink, console});
  log->set_level(spdlog::level::debug);
  log->flush_on(spdlog::level::debug);
  spdlog::set_default_logger(log);
  return log;
}

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

int resolve_threads(int requested, const RunConfig& config) {
  int threads = requested;
  if (threads <= 0 && config.run.has("threads"))
    threads = static_cast<int>(config.run.integer("threads"));
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return threads;
}

}  // namespace

int eval(const Args& args) {
  po::options_description opts("workbench eval RUN_DIR [options]");
  std::string dir;
  std::vector<std::string> only, additions, plugin_paths;
  int threads = 0;
  opts.add_options()("help,h", "show this help")(
      "evaluator", po::value(&only)->composing(),
      "run only this evaluator of the run (its name in metrics.h5: knn, knn_2, ...; repeatable)")(
      "add", po::value(&additions)->composing(),
      "run an extra evaluator given as a TOML inline table, e.g. "
      "'{ plugin = \"knn\", k = 10 }' (repeatable); it is appended to config.toml")(
      "force", "rerun evaluators whose results are already in metrics.h5")(
      "threads", po::value(&threads), "intra-op threads (default: config threads, else all cores)")(
      "plugin-path", po::value(&plugin_paths)->composing(), "extra plugin folder or file");
  po::options_description hidden;
  hidden.add_options()("dir", po::value(&dir), "the run directory");
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description positional;
  positional.add("dir", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
  po::notify(vm);
  if (vm.count("help") || dir.empty()) {
    (vm.count("help") ? std::cout : std::cerr)
        << opts
        << "\nWithout --evaluator/--add: every evaluator of the run whose results are missing.\n";
    return vm.count("help") ? 0 : 2;
  }
  const bool force = vm.count("force") > 0;

  const RunPaths paths(dir);
  if (!fs::is_regular_file(paths.config)) {
    std::cerr << "error: " << paths.config.string() << " not found: not a run directory\n";
    return 2;
  }
  const fs::path checkpoint = paths.checkpoints / "last.pt";
  if (!fs::is_regular_file(checkpoint)) {
    std::cerr << "error: " << checkpoint.string()
              << " not found: the run has not trained yet (run it with 'workbench run')\n";
    return 2;
  }
  RunStatus status = read_status(paths.status);
  if (status.state == RunState::Running && process_alive(status.pid)) {
    std::cerr << "error: " << paths.dir.string() << " is running (pid " << status.pid
              << "); evaluate it when it has finished\n";
    return 2;
  }

  Registry registry;
  const PluginLoader loader = load_plugins(registry, plugin_paths);
  for (const auto& f : loader.failures())
    std::cerr << "warning: plugin library " << f.path << " not loaded: " << f.reason << "\n";
  RunConfig config;
  std::vector<std::string> selected = only;
  try {
    config = load_run_config(paths.config, registry);
    bool changed = false;
    for (const auto& name : add_evaluators(config, additions, registry, changed))
      add_unique(selected, name);
    if (changed) {
      config.toml = canonical_toml(config);
      write_file_atomic(paths.config, config.toml);
    }
  } catch (const ConfigError& e) {
    std::cerr << e.what() << "\n";
    return 2;
  }
  const auto names = evaluator_names(config);
  for (const auto& name : selected)
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      std::cerr << "error: no evaluator named '" << name << "' in " << paths.config.string() << " ("
                << (names.empty() ? "it has none" : "it has " + config::join(names))
                << "; --add runs another)\n";
      return 2;
    }

  threads = resolve_threads(threads, config);
  setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);
  at::set_num_threads(threads);

  auto log = make_log(paths.log);
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

    const c10::Device device = pick_device(config.run.text("device"));
    auto train_data = open_data(config.data, Split::Train);
    const DataShape shape{train_data->channels(), train_data->image_size(), train_data->classes()};
    auto comm = make_single_process_communicator();
    Model model = build_model(config, registry, shape, comm.get());
    // Module names as the trainer saves them (trainer.cpp, checkpoint_state).
    CheckpointState state;
    state.modules["backbone"] = model.backbone;
    if (model.momentum) state.modules["momentum"] = model.momentum;
    for (std::size_t i = 0; i < model.losses.size(); ++i)
      state.modules["loss" + std::to_string(i) + "_" + model.loss_names[i]] = model.losses[i];
    const std::int64_t step = load_checkpoint(checkpoint, state);
    model.to(device);
    log->info("eval {}: checkpoint step {}, {} threads, device {}", paths.dir.string(), step,
              threads, device.str());
    if (status.state != RunState::Done)
      log->warn("the run is {}: evaluating its last checkpoint (step {} of {})",
                state_name(status.state), step, status.total_steps);

    MetricsFile metrics(paths.metrics);
    EvaluatorRun run;
    run.dir = paths.dir;
    run.config = &config;
    run.registry = &registry;
    run.metrics = &metrics;
    run.log = log.get();
    run.threads = threads;
    run.cache_tag = "step" + std::to_string(step);
    run.only = todo;
    run.force = force;
    run.keep_going = true;
    run.on_done = [&](const std::string& name) {
      add_unique(status.evaluators_done, name);
      write_status(paths.status, status);
    };
    const auto ran = run_evaluators(run, model, device);
    metrics.flush();
    log->info("evaluated: {}", config::join(ran));
    return 0;
  } catch (const std::exception& e) {
    log->error("{}", e.what());
    return 1;
  }
}

}  // namespace wb::cli
