// The clustering of a run's training set on disk (clusters.h5, docs/moce.md): the centroids,
// every training image's cluster by data-set index, the identity of the data set it was made
// from, and the parameters. A run that names the file (data.clusters) is refused when its own
// training set is not that data set.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "cluster/clustering.h"
#include "workbench/data.h"

namespace wb {

struct DataSettings;

// What tells two opened training sets apart: the data set's own description (format, split and
// every subset applied), the image count, and a fingerprint (FNV-1a over every label and the
// pixels of 16 images spread over the set).
struct DataIdentity {
  std::string description;
  std::int64_t images = 0;
  std::string fingerprint;  // 16 hex digits
  std::string settings;     // the [data] keys that chose it, for people ("dataset = ...; ...")
};

DataIdentity data_identity(const Dataset& data, const DataSettings& settings);
// The same data set: description, image count and fingerprint agree (settings is for people).
bool same_data(const DataIdentity& a, const DataIdentity& b);

struct ClusterFile {
  at::Tensor centroids;   // [m, D] float
  at::Tensor assignment;  // [n] int64
  DataIdentity data;
  std::string source_run;  // the run directory whose features were clustered
  std::int64_t checkpoint_step = 0;
  ClusteringOptions options;
  std::vector<double> epoch_loss;
};

// Writes atomically (a temporary file renamed over `file`): a failed write leaves an older
// file intact.
void write_cluster_file(const std::filesystem::path& file, const ClusterFile& clusters);
// Throws naming the file when it is missing, not a cluster file, or inconsistent.
ClusterFile read_cluster_file(const std::filesystem::path& file);

// data.clusters names a file or a run directory holding clusters.h5.
std::filesystem::path cluster_file_path(const std::string& setting);

// The cluster ids of a run's training set: reads data.clusters and refuses it unless it was
// made from `train` (the opened training split, before any sharding between processes).
ClusterFile load_run_clusters(const DataSettings& settings, const Dataset& train);

// Throws std::runtime_error naming `file`, what it was made from and what `data` is, when the
// two identities differ.
void check_cluster_identity(const ClusterFile& clusters, const std::filesystem::path& file,
                            const DataIdentity& data);

}  // namespace wb
