#include "cluster/deploy.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>

#include "cluster/assign.h"
#include "cluster/cluster_file.h"
#include "cluster/trained_run.h"
#include "plugin/loader.h"
#include "process/logging.h"
#include "process/threads.h"
#include "process/verb_exit.h"
#include "store/atomic_file.h"
#include "store/run_dir.h"
#include "store/status.h"
#include "train/checkpoint.h"
#include "train/data_access.h"
#include "workbench/registry.h"

namespace wb {

namespace fs = std::filesystem;

namespace {

// The backbone table of the dense twin: experts = 0, the MoE placement keys at their defaults,
// no expert width.
Params dense_backbone(const PluginConfig& backbone, const Registry& registry) {
  static const std::set<std::string> placement = {"moe_every", "moe_last", "moe_blocks"};
  const Params defaults = registry.defaults(Kind::Backbone, backbone.plugin);
  Params out(backbone.params.owner());
  for (const auto& [key, value] : backbone.params.values()) {
    if (key == "expert_hidden" || key == "expert_ratio") continue;
    out.set(key, placement.count(key) && defaults.has(key) ? defaults.at(key) : value);
  }
  if (!out.has("experts"))
    throw std::invalid_argument("deploy: backbone '" + backbone.plugin +
                                "' has no 'experts' parameter to make its dense twin with");
  out.set("experts", std::int64_t{0});
  return out;
}

// The expert each MoE layer sends an image of `cluster` to, and its combine weight.
void route_cluster(Backbone& backbone, std::int64_t cluster, const DataShape& shape,
                   std::vector<std::int64_t>& experts, std::vector<double>& weights) {
  at::NoGradGuard no_grad;
  backbone.eval();
  const at::Tensor any = backbone.parameters().at(0);
  const at::Tensor image =
      at::zeros({1, shape.channels, shape.image_size, shape.image_size}, any.options());
  RoutingContext rc;
  rc.training = false;
  const auto ids = at::TensorOptions().dtype(at::kLong).device(any.device());
  rc.view = at::zeros({1}, ids);
  rc.cluster = at::full({1}, cluster, ids);
  const BackboneOutput out = backbone.forward(image, rc);
  for (const auto& r : out.routings) {
    const at::Tensor first = r.experts.select(1, 0);
    const std::int64_t e = first[0].item<std::int64_t>();
    if (!first.eq(e).all().item<bool>())
      throw std::invalid_argument(
          "deploy: the gate sends the tokens of one image to different experts; one expert "
          "path exists only with a cluster-conditional gate (gate 'cluster')");
    experts.push_back(e);
    weights.push_back(r.weights[0][0].item<double>());
  }
}

std::string list(const std::vector<std::int64_t>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

ExpertPath expert_path(const RunConfig& moe_config, Model& moe, std::int64_t cluster,
                       const Registry& registry, const DataShape& shape, bool fold_gate) {
  Backbone& backbone = *moe.backbone;
  const std::vector<std::int64_t> blocks = backbone.moe_blocks();
  if (blocks.empty() || backbone.experts() == 0)
    throw std::invalid_argument("deploy: the run's backbone has no MoE layers: nothing to choose");
  ExpertPath path;
  route_cluster(backbone, cluster, shape, path.experts, path.gate_weights);
  if (path.experts.size() != blocks.size())
    throw std::logic_error("deploy: the backbone reported " + std::to_string(path.experts.size()) +
                           " routings for " + std::to_string(blocks.size()) + " MoE blocks");

  RunConfig dense = moe_config;
  dense.backbone.params = dense_backbone(moe_config.backbone, registry);
  dense.gate = PluginConfig{};
  dense.data.set("clusters", std::string());
  path.config = parse_run_config(canonical_toml(dense), "the deployed configuration", registry);
  path.model = build_model(path.config, registry, shape, moe.comm);
  const at::Tensor any = backbone.parameters().at(0);
  path.model.to(any.device());
  path.model.backbone->to(any.scalar_type());
  for (auto& loss : path.model.losses) loss->to(any.scalar_type());

  // Every weight of the dense twin: the MoE model's own, or the chosen expert's for the MLP of
  // a MoE block.
  std::map<std::string, at::Tensor> source;
  for (const auto& item : backbone.named_parameters()) source[item.key()] = item.value();
  for (const auto& item : backbone.named_buffers()) source[item.key()] = item.value();
  static const std::regex mlp(R"(block(\d+)\.(fc1|fc2)\.(weight|bias))");
  at::NoGradGuard no_grad;
  auto copy = [&](const std::string& name, at::Tensor& target) {
    at::Tensor value;
    std::smatch m;
    if (auto it = source.find(name); it != source.end()) {
      value = it->second;
    } else if (std::regex_match(name, m, mlp)) {
      const std::int64_t block = std::stoll(m[1].str());
      const auto at_block = std::find(blocks.begin(), blocks.end(), block);
      if (at_block == blocks.end())
        throw std::logic_error("deploy: dense weight " + name + " has no source");
      const auto layer = static_cast<std::size_t>(at_block - blocks.begin());
      const std::string moe_name = "block" + m[1].str() + ".moe.";
      const bool first = m[2] == "fc1", weight = m[3] == "weight";
      const auto found =
          source.find(moe_name + (first ? (weight ? "w1" : "b1") : (weight ? "w2" : "b2")));
      if (found == source.end())
        throw std::invalid_argument("deploy: the backbone has no " + moe_name +
                                    "w1/b1/w2/b2: not the ViT layout");
      value = found->second[path.experts[layer]];
      if (weight) value = value.t();
      if (!first && fold_gate) value = value * path.gate_weights[layer];
    } else {
      throw std::logic_error("deploy: dense weight " + name + " has no source");
    }
    if (!value.sizes().equals(target.sizes()))
      throw std::invalid_argument(
          "deploy: " + name + " is " + c10::str(target.sizes()) + " in the dense backbone but " +
          c10::str(value.sizes()) +
          " in the MoE model (experts must be as wide as the dense MLP: expert_ratio = "
          "mlp_ratio)");
    target.copy_(value);
  };
  for (auto& item : path.model.backbone->named_parameters()) copy(item.key(), item.value());
  for (auto& item : path.model.backbone->named_buffers()) copy(item.key(), item.value());
  for (std::size_t i = 0; i < moe.losses.size(); ++i)
    copy_weights(*moe.losses[i], *path.model.losses[i]);
  if (path.model.momentum) copy_weights(*path.model.backbone, *path.model.momentum);
  return path;
}

int deploy_run(const DeployRequest& request, std::ostream& err) {
  const RunPaths paths(request.dir);
  Registry registry;
  const PluginLoader loader = load_plugins(registry, request.plugin_paths);
  for (const auto& f : loader.failures())
    err << "warning: plugin library " << f.path << " not loaded: " << f.reason << "\n";
  if (!fs::is_regular_file(paths.config)) {
    err << "error: " << paths.config.string() << " not found: not a run directory\n";
    return 2;
  }
  RunConfig config;
  try {
    config = load_run_config(paths.config, registry);
  } catch (const ConfigError& e) {
    err << e.what() << "\n";
    return 2;
  }
  if (!config.settings.datasets.count(request.data)) {
    std::string known;
    for (const auto& [name, d] : config.settings.datasets)
      known += (known.empty() ? "" : ", ") + name;
    err << "error: --data " << request.data << ": no [datasets." << request.data << "] in "
        << paths.config.string() << " (defined: " << (known.empty() ? "none" : known) << ")\n";
    return 2;
  }
  if (config.settings.data.clusters.empty()) {
    err << "error: " << paths.config.string()
        << " names no clustering (data.clusters): deploy needs a MoCE run\n";
    return 2;
  }
  use_threads(resolve_threads(request.threads, config.settings.run.threads));
  const fs::path out =
      request.out.empty()
          ? paths.dir.parent_path() / (paths.dir.filename().string() + "-deploy-" + request.data)
          : request.out;

  const RunLog run_log = open_run_log(paths.log, "deploy");
  spdlog::logger& log = *run_log.log;
  try {
    TrainedRun run = open_trained_run(paths.dir, registry);
    const fs::path cluster_path = cluster_file_path(config.settings.data.clusters);
    const ClusterFile clusters = read_cluster_file(cluster_path);
    TrainedRun source = open_cluster_source(clusters, cluster_path, registry);

    // The downstream set through the clustering's own features (eval view, unit length).
    auto downstream = open_data(config.settings.datasets.at(request.data), Split::Train);
    const std::int64_t m = clusters.centroids.size(0);
    const at::Tensor assignment = nearest_centroids(source, downstream, clusters.centroids);
    const at::Tensor counts = at::bincount(assignment, {}, m);
    const std::int64_t cluster = counts.argmax().item<std::int64_t>();
    const std::int64_t in_cluster = counts[cluster].item<std::int64_t>();
    log.info("deploy: {} images of {} ({}) -> cluster {} holds {} of them ({} clusters used)",
             downstream->size(), request.data, downstream->describe(), cluster, in_cluster,
             counts.gt(0).sum().item<std::int64_t>());

    ExpertPath path =
        expert_path(config, run.model, cluster, registry, run.shape, request.fold_gate);
    const ModelCost moe_cost = run.model.backbone->cost();
    const ModelCost dense_cost = path.model.backbone->cost();
    log.info("deploy: experts {} (gate weights folded: {}); {} parameters instead of {}",
             list(path.experts), request.fold_gate ? "yes" : "no", dense_cost.parameters,
             moe_cost.parameters);

    const RunPaths target(out);
    if (fs::exists(target.checkpoints / "last.pt"))
      throw std::invalid_argument(out.string() + " already holds a checkpoint: remove it first");
    fs::create_directories(target.checkpoints);
    write_file_atomic(target.config, path.config.toml);
    CheckpointState state = checkpoint_state(path.model);
    state.step = run.step;
    save_checkpoint(target.checkpoints / "last.pt", state);
    std::ostringstream info;
    info << "# workbench deploy: one expert path of a MoCE run as a dense backbone\n"
         << "source_run = " << toml_string(fs::absolute(paths.dir).lexically_normal().string())
         << "\nclusters = " << toml_string(fs::absolute(cluster_path).lexically_normal().string())
         << "\ndata = " << toml_string(request.data) << "\ndata_images = " << downstream->size()
         << "\ncluster = " << cluster << "\ncluster_images = " << in_cluster
         << "\nexperts = " << list(path.experts) << "\ngate_weights = [";
    for (std::size_t i = 0; i < path.gate_weights.size(); ++i)
      info << (i ? ", " : "") << path.gate_weights[i];
    info << "]\nfold_gate = " << (request.fold_gate ? "true" : "false")
         << "\nparameters = " << dense_cost.parameters
         << "\nmoe_parameters = " << moe_cost.parameters << "\n";
    write_file_atomic(out / "deploy.toml", info.str());
    RunStatus status;
    status.state = RunState::Done;
    status.step = status.total_steps = run.step;
    status.started = status.finished = now_iso8601();
    write_status(target.status, status);
    log.info("deploy: wrote {}", out.string());
    return 0;
  } catch (...) {
    return verb_exit_code(log);
  }
}

}  // namespace wb
