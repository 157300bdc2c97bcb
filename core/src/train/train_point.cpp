#include "train/train_point.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <ctime>
#include <stdexcept>

#include "cluster/assign.h"
#include "dist/communicator.h"
#include "h5/metrics.h"
#include "process/stop_signals.h"
#include "train/data_access.h"
#include "weights/init.h"
#include "workbench/plugin.h"
#include "workbench/registry.h"
#include "workbench/version.h"

namespace wb {

namespace fs = std::filesystem;

namespace {

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

TrainedPoint train_point(const TrainContext& context) {
  const RunConfig& config = *context.config;
  const Settings& settings = config.settings;
  spdlog::logger& log = *context.output.log;
  stop_on_signals();

  const std::uint64_t seed = settings.run.seed;
  at::manual_seed(seed);  // the same initial weights on every rank
  c10::Device device = pick_device(settings.run.device);
  const Rendezvous& ranks = context.rendezvous;
  if (device.is_cuda() && ranks.world > 1)  // the local rank's GPU, as torchrun and srun mean
    device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(
                                         ranks.local_rank % std::max<int>(1, at::getNumGPUs())));
  std::unique_ptr<Communicator> comm =
      ranks.world > 1 ? make_c10d_communicator(ranks, device) : make_single_process_communicator();

  auto train_data = open_data(settings.data, Split::Train);
  // MoCE: every image's cluster id, refused unless the clustering was made from this data set.
  if (!settings.data.clusters.empty()) {
    const ClusterFile clusters = load_run_clusters(settings.data, *train_data);
    train_data = with_clusters(train_data, clusters.assignment);
    log.info("clusters: {} ({} clusters of {})", cluster_file_path(settings.data.clusters).string(),
             clusters.centroids.size(0), clusters.data.description);
  }
  log.info("data: {}", train_data->describe());
  DataShape shape{train_data->channels(), train_data->image_size(), train_data->classes()};
  Model model = build_model(config, *context.registry, shape, comm.get());
  const fs::path checkpoint = context.dir / "checkpoints" / "last.pt";
  if (!fs::exists(checkpoint)) apply_init(config.init, model, log);  // a resume keeps its weights
  model.to(device);
  const ModelCost cost = model.backbone->cost();
  log.info(
      "backbone {}: {} parameters ({} active per token), {}MACs per image (the papers' "
      "FLOPs)",
      config.backbone.plugin, format_count(cost.parameters), format_count(cost.active_parameters),
      format_count(cost.flops_per_image));
  // Every rank holds the same initial weights here (the seed, [init]); each keeps its experts.
  if (settings.train.expert_parallel && ranks.world > 1) {
    shard_experts(model, *comm);
    log.info("expert parallel: {} experts of each MoE layer on each of {} ranks",
             model.backbone->experts() / ranks.world, ranks.world);
  }

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
      {"processes", std::to_string(ranks.world)},
      {"parameters", std::to_string(cost.parameters)},
      {"active_parameters", std::to_string(cost.active_parameters)},
      {"macs_per_image", std::to_string(static_cast<std::int64_t>(cost.flops_per_image))}};
  context.output.metrics->set_config(config.toml);
  context.output.metrics->set_provenance(provenance);

  const std::vector<ViewRecipe> recipes =
      train_recipes(config, model.needs.views, train_data->image_size());
  LoaderOptions options;
  const std::int64_t global_batch = settings.train.batch;
  if (global_batch % ranks.world != 0)
    throw std::runtime_error("train.batch = " + std::to_string(global_batch) +
                             " cannot be split evenly between " + std::to_string(ranks.world) +
                             " processes");
  // One global order: each rank builds its slice of every global batch (docs/scale.md).
  options.batch_size = global_batch;
  options.rank = ranks.rank;
  options.world = ranks.world;
  options.workers = settings.run.workers;
  options.seed = seed;
  options.pin_memory = device.is_cuda();
  options.interruptible = false;  // the trainer checks after each step, checkpoint first
  Loader loader(train_data, recipes, options);
  // Gate noise and other random draws differ between ranks, as they would across GPUs.
  if (ranks.world > 1) at::manual_seed(seed * 1000003 + static_cast<std::uint64_t>(ranks.rank));
  const TrainSchedule schedule = train_schedule(settings.train, loader.batches_per_epoch());
  log.info("training: {} steps ({} per epoch), batch {} per rank, peak lr {:.3g}, warmup {} steps",
           schedule.total_steps, schedule.batches_per_epoch, global_batch / ranks.world,
           schedule.peak_lr, schedule.warmup_steps);
  train(context.output, model, loader, *comm, device, schedule, checkpoint);
  gather_experts(model);  // evaluation (rank 0) needs every expert; collective
  TrainedPoint out;
  out.model = std::move(model);
  out.device = device;
  out.comm = std::move(comm);
  out.steps = schedule.total_steps;
  return out;
}

}  // namespace wb
