#include "train/execute.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <csignal>
#include <ctime>
#include <set>
#include <stdexcept>

#include "dist/communicator.h"
#include "h5/metrics.h"
#include "store/run_dir.h"
#include "train/data_access.h"
#include "train/model.h"
#include "train/run_evaluators.h"
#include "train/trainer.h"
#include "workbench/plugin.h"
#include "workbench/registry.h"
#include "workbench/version.h"

namespace wb {

namespace fs = std::filesystem;

namespace {

void on_stop_signal(int) { g_stop_requested.store(true); }

std::vector<std::string> view_presets(const RunConfig& config, int views) {
  std::string recipe = config.views.text("recipe");
  if (recipe == "auto") recipe = views >= 2 ? "moco" : "train";
  if (recipe == "moco") return {"moco1", "moco2"};
  return std::vector<std::string>(static_cast<std::size_t>(views), recipe);
}

std::string format_count(double n) {
  char buf[32];
  if (n >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2f G", n / 1e9);
  else if (n >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2f M", n / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%.0f", n);
  return buf;
}

}  // namespace

void execute_point(const PointContext& context) {
  const RunConfig& config = *context.config;
  spdlog::logger& log = *context.log;
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);

  const auto seed = static_cast<std::uint64_t>(config.run.integer("seed"));
  at::manual_seed(seed);
  const c10::Device device = pick_device(config.run.text("device"));
  auto comm = make_single_process_communicator();

  auto train_data = open_data(config.data, Split::Train);
  log.info("data: {}", train_data->describe());
  DataShape shape{train_data->channels(), train_data->image_size(), train_data->classes()};
  Model model = build_model(config, *context.registry, shape, comm.get());
  model.to(device);
  const ModelCost cost = model.backbone->cost();
  log.info("backbone {}: {} parameters ({} active per token), {}MACs per image (the papers' "
           "FLOPs)",
           config.backbone.plugin, format_count(cost.parameters),
           format_count(cost.active_parameters), format_count(cost.flops_per_image));

  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  const std::time_t now = std::time(nullptr);
  char started[32];
  std::strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  std::map<std::string, std::string> provenance{
      {"workbench_version", WORKBENCH_VERSION},
      {"git_commit", WORKBENCH_GIT_COMMIT},
      {"experiment", context.dir.parent_path().filename().string()},
      {"point_id", context.dir.filename().string()},
      {"hostname", host},
      {"started", started},
      {"torch_version", WORKBENCH_TORCH_VERSION},
      {"device", device.str()},
      {"seed", std::to_string(seed)},
      {"threads", std::to_string(context.threads)},
      {"parameters", std::to_string(cost.parameters)},
      {"active_parameters", std::to_string(cost.active_parameters)},
      {"macs_per_image", std::to_string(static_cast<std::int64_t>(cost.flops_per_image))}};
  context.metrics->set_config(config.toml);
  context.metrics->set_provenance(provenance);

  std::vector<ViewRecipe> recipes;
  const auto presets = view_presets(config, model.needs.views);
  for (std::size_t v = 0; v < presets.size(); ++v)
    recipes.push_back(make_recipe(presets[v], v == 0 ? config.view1 : config.view2,
                                  train_data->image_size()));
  LoaderOptions options;
  options.batch_size = config.train.integer("batch");
  options.workers = static_cast<int>(config.run.integer("workers"));
  options.seed = seed;
  Loader loader(train_data, recipes, options);
  const TrainSettings settings = train_settings(config, loader.batches_per_epoch(), comm->world_size());
  log.info("training: {} steps ({} per epoch), batch {}, peak lr {:.3g}, warmup {} steps",
           settings.total_steps, settings.batches_per_epoch, options.batch_size, settings.peak_lr,
           settings.warmup_steps);
  train(context, model, loader, *comm, device, settings, context.dir / "checkpoints" / "last.pt");
  EvaluatorRun evaluators;
  evaluators.dir = context.dir;
  evaluators.config = context.config;
  evaluators.registry = context.registry;
  evaluators.metrics = context.metrics;
  evaluators.log = context.log;
  evaluators.threads = context.threads;
  evaluators.cache_tag = "step" + std::to_string(settings.total_steps);
  run_evaluators(evaluators, model, device);
}

}  // namespace wb
