// `workbench deploy RUN_DIR --data NAME` (MoCE, docs/methods.md §8, docs/moce.md): the downstream
// set is embedded with the clustering's own features (the run the cluster file was made from),
// assigned to the nearest centroid (A = F C^T, argmax), and the cluster holding the most of its
// images chooses, in every MoE layer, the expert the gate sends that cluster to (top-1, no
// noise). Those experts become the MLPs of a dense backbone, written as an ordinary run
// directory that `workbench eval` and every evaluator accept.
#pragma once

#include <cstdint>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "config/run_config.h"
#include "train/model.h"

namespace wb {

class Registry;

// The dense path of one cluster through a cluster-routed MoE model.
struct ExpertPath {
  RunConfig config;                   // the dense twin: experts = 0, no gate, no data.clusters
  Model model;                        // built from `config`, the path's weights copied in
  std::vector<std::int64_t> experts;  // the expert of every MoE layer, in block order
  std::vector<double> gate_weights;   // its combine weight (the gate's probability)
};

// Routes one image of cluster `cluster` through `moe` (eval mode: no noise), keeps the chosen
// expert of every MoE layer and builds the dense model whose block MLPs are those experts. With
// fold_gate the expert's combine weight p is folded into the second layer (fc2 = p x expert), so
// that the dense model computes exactly what the MoE model computes for images of that cluster;
// without, fc2 is the expert as trained (the paper's "use the corresponding experts").
// The backbone must have the ViT layout (block<i>.moe.w1/b1/w2/b2 <-> block<i>.fc1/fc2), take
// `experts` = 0 and the MoE placement keys at their defaults for its dense twin, and have
// experts as wide as its dense MLPs; the gate must send all tokens of an image to one expert.
ExpertPath expert_path(const RunConfig& moe_config, Model& moe, std::int64_t cluster,
                       const Registry& registry, const DataShape& shape, bool fold_gate);

struct DeployRequest {
  std::filesystem::path dir;  // the MoCE run
  std::string data;           // a [datasets.<name>] of that run: the downstream set
  std::filesystem::path out;  // empty = <dir>-deploy-<data> beside it
  bool fold_gate = true;
  int threads = 0;
  std::vector<std::string> plugin_paths;
};

// Returns the exit status of `workbench deploy`: 0 written, 1 failed, 2 a request that cannot
// be served (named on `err`).
int deploy_run(const DeployRequest& request, std::ostream& err);

}  // namespace wb
