// Images assigned to the clusters of a MoCE clustering (docs/moce.md, "Cluster ids for
// evaluation sets"): embedded with the features of the run the clustering was made from
// (evaluation view, CLS, unit length) and given the nearest centroid, argmax of F C^T. Shared
// by `workbench deploy` (the downstream set) and the evaluation of a cluster-gated run (every
// data set its evaluators read).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cluster/cluster_file.h"
#include "cluster/trained_run.h"
#include "workbench/data.h"

namespace spdlog {
class logger;
}

namespace wb {

class Registry;
struct DataSettings;

// Opens the run a clustering was made from (its source_run). Throws std::runtime_error naming
// that directory and the cluster file when the run is gone, moved or not loadable.
TrainedRun open_cluster_source(const ClusterFile& clusters, const std::filesystem::path& file,
                               const Registry& registry);

// The nearest centroid [n] int64 of every image of `data` under `source`'s features.
at::Tensor nearest_centroids(TrainedRun& source, std::shared_ptr<const Dataset> data,
                             const at::Tensor& centroids);

// `data` with every item's cluster id (Dataset::cluster), `clusters` [N] int64 by item index;
// subsets of it keep them, and a Loader over it puts them into Batch::cluster.
std::shared_ptr<const Dataset> with_clusters(std::shared_ptr<const Dataset> data,
                                             const at::Tensor& clusters);

// The cluster ids of the data sets a cluster-gated run's evaluators read. The clustered
// training set itself (the same identity as the cluster file's) keeps its stored, Sinkhorn-
// balanced assignment; every other set gets the plain nearest centroid. The source run is
// opened at the first set that needs its features, once.
class EvalClusters {
 public:
  // `setting` is data.clusters (a file or a run directory holding clusters.h5).
  EvalClusters(const std::string& setting, const Registry& registry, spdlog::logger& log);
  ~EvalClusters();
  EvalClusters(const EvalClusters&) = delete;
  EvalClusters& operator=(const EvalClusters&) = delete;

  // `data`, opened with `settings`, with every item's cluster id.
  std::shared_ptr<const Dataset> assign(std::shared_ptr<const Dataset> data,
                                        const DataSettings& settings);

 private:
  std::filesystem::path file_;
  ClusterFile clusters_;
  const Registry& registry_;
  spdlog::logger& log_;
  std::unique_ptr<TrainedRun> source_;
};

}  // namespace wb
