// `workbench cluster RUN_DIR`: clusters the training set of a trained run with the run's own
// features (docs/methods.md §8, docs/moce.md) and writes RUN_DIR/clusters.h5 (or --out).
#pragma once

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "cluster/clustering.h"

namespace wb {

struct ClusterRequest {
  std::filesystem::path dir;  // the run directory
  std::filesystem::path out;  // empty = dir / "clusters.h5"
  ClusteringOptions options;
  int threads = 0;  // 0 = the config's, else all cores
  std::vector<std::string> plugin_paths;
};

// Features: CLS of the evaluation view of every image of the run's training set ([data] with
// its subsets), from the last checkpoint, unit length; cached under RUN_DIR/eval like the
// evaluators' features. Returns the exit status: 0 written, 1 failed (see run.log), 2 the
// request cannot be served (named on `err`).
int cluster_run(const ClusterRequest& request, std::ostream& err);

}  // namespace wb
