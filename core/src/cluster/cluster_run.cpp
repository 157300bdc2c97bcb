#include "cluster/cluster_run.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include "cluster/cluster_file.h"
#include "cluster/trained_run.h"
#include "config/run_config.h"
#include "eval/context.h"
#include "plugin/loader.h"
#include "process/logging.h"
#include "process/threads.h"
#include "process/verb_exit.h"
#include "store/run_dir.h"
#include "train/model.h"
#include "workbench/layers.h"
#include "workbench/registry.h"

namespace wb {

namespace fs = std::filesystem;

int cluster_run(const ClusterRequest& request, std::ostream& err) {
  const RunPaths paths(request.dir);
  Registry registry;
  const PluginLoader loader = load_plugins(registry, request.plugin_paths);
  for (const auto& f : loader.failures())
    err << "warning: plugin library " << f.path << " not loaded: " << f.reason << "\n";
  if (!fs::is_regular_file(paths.config)) {
    err << "error: " << paths.config.string() << " not found: not a run directory\n";
    return 2;
  }
  int configured_threads = 0;
  try {
    configured_threads = load_run_config(paths.config, registry).settings.run.threads;
  } catch (const ConfigError& e) {
    err << e.what() << "\n";
    return 2;
  }
  const int threads = resolve_threads(request.threads, configured_threads);
  use_threads(threads);
  const fs::path out = request.out.empty() ? paths.dir / "clusters.h5" : request.out;

  const RunLog run_log = open_run_log(paths.log, "cluster");
  spdlog::logger& log = *run_log.log;
  try {
    TrainedRun run = open_trained_run(paths.dir, registry);
    RunEvalContext context(run.config, registry, run.model, run.device, threads, paths.eval, log,
                           "step" + std::to_string(run.step));
    const auto train_data = context.dataset("", Split::Train);
    check_clustering_options(request.options, train_data->size());
    log.info("cluster {}: features of {} (checkpoint step {})", paths.dir.string(),
             train_data->describe(), run.step);
    const at::Tensor features = l2_normalize(context.features("", Split::Train).features);

    const ClusteringOptions& o = request.options;
    log.info(
        "clustering {} images into {} clusters: {} epochs, batch {}, lr {}, momentum {}, "
        "weight decay {}, Sinkhorn {} iterations, epsilon {}, temperature {}",
        features.size(0), o.clusters, o.epochs, o.batch, o.lr, o.momentum, o.weight_decay,
        o.iterations, o.epsilon, o.temperature);
    ClusteringResult result = cluster_features(features, o);
    const at::Tensor sizes = at::bincount(result.assignment, {}, o.clusters);
    log.info("cross-entropy {:.4f} -> {:.4f}; cluster sizes {} .. {}, {} empty",
             result.epoch_loss.front(), result.epoch_loss.back(), sizes.min().item<std::int64_t>(),
             sizes.max().item<std::int64_t>(), sizes.eq(0).sum().item<std::int64_t>());

    ClusterFile file;
    file.centroids = result.centroids;
    file.assignment = result.assignment;
    file.data = data_identity(*train_data, run.config.settings.data);
    file.source_run = fs::absolute(paths.dir).lexically_normal().string();
    file.checkpoint_step = run.step;
    file.options = o;
    file.epoch_loss = result.epoch_loss;
    write_cluster_file(out, file);
    log.info("wrote {}", out.string());
    return 0;
  } catch (...) {
    return verb_exit_code(log);
  }
}

}  // namespace wb
