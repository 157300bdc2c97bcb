// Gate "cluster": MoCE's cluster-conditional gate (docs/methods.md §8). The gate input is the
// centroid C[c] of the image's cluster c, from the run's clustering (data.clusters, made by
// `workbench cluster`; the host hands it over in GateShape::centroids), so
// G = TopK(softmax(W_g · C[c] + noise)) is one routing per image that all its tokens share.
//
// Choices where the paper leaves room:
// - C is fixed: a buffer (saved with the checkpoint), not a learnable table; the paper's
//   "embedding of the cluster" is the clustering's centroid.
// - Noise as in noisy_topk: N(0, (noise_std / E)^2) on the logits, training only, drawn per
//   image (all tokens of an image share it). W_g starts N(0, 1/D_c) (init_std overrides).
// - The combine weights are the softmax probabilities at the chosen experts (not renormalised),
//   as in noisy_topk; no capacity (every image goes to its experts).
// - No auxiliary term of its own: MoCE's regulariser is the imbalance loss (loss plugin
//   `imbalance`), which reads Routing::probs / gates; V-MoE's balancing terms, which push the
//   other way, are not reported.
#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "workbench/balance.h"
#include "workbench/gate.h"
#include "workbench/plugin.h"

namespace {

// An image (all its tokens) goes to k different experts of the layer.
std::string k_problem(std::int64_t k, std::int64_t experts) {
  if (k >= 1 && k <= experts) return "";
  return "k = " + std::to_string(k) + " must be between 1 and the number of experts (" +
         std::to_string(experts) + ")";
}

class ClusterGate : public wb::Gate {
 public:
  ClusterGate(const wb::Params& p, const wb::GateShape& shape)
      : experts_(shape.experts), k_(p.integer("k")), noise_std_(p.real("noise_std")) {
    if (const std::string problem = k_problem(k_, experts_); !problem.empty())
      throw std::invalid_argument("gate cluster: " + problem);
    if (!shape.centroids.defined() || shape.centroids.dim() != 2)
      throw std::invalid_argument(
          "gate cluster: needs the centroids of a clustering: set data.clusters to the "
          "clusters.h5 written by 'workbench cluster RUN_DIR' (docs/moce.md)");
    centroids_ = register_buffer("centroids", shape.centroids.to(at::kFloat).clone());
    const auto width = centroids_.size(1);
    const double init_std = p.maybe_real("init_std").value_or(1.0 / std::sqrt(double(width)));
    weight_ = register_parameter("weight", at::randn({experts_, width}) * init_std);
  }

  wb::Routing route(const at::Tensor& x, const wb::GateInput& in) override {
    if (!in.cluster.defined())
      throw std::invalid_argument(
          "gate cluster: the batch has no cluster ids; MoCE routing needs the cluster of every "
          "image (data.clusters names the clustering; the host gives every data set of such a "
          "run its images' ids, and a RoutingContext built by hand must carry Batch::cluster)");
    if (!in.image.defined() || in.image.size(0) != x.size(0))
      throw std::invalid_argument("gate cluster: needs the image index of every token");
    // Ids on the CPU are range-checked through their memory (no host read, which on a GPU would
    // stall every step); ids on a device were checked when the cluster file was read.
    if (in.cluster.is_cpu()) {
      const auto clusters = centroids_.size(0);
      const at::Tensor ids = in.cluster.to(at::kLong).contiguous();
      const std::int64_t* id = ids.data_ptr<std::int64_t>();
      for (std::int64_t i = 0; i < ids.numel(); ++i)
        if (id[i] < 0 || id[i] >= clusters)
          throw std::invalid_argument("gate cluster: cluster id " + std::to_string(id[i]) +
                                      " is outside the clustering's " + std::to_string(clusters) +
                                      " clusters");
    }

    const double sigma = in.training ? noise_std_ / static_cast<double>(experts_) : 0.0;
    const at::Tensor logits =
        centroids_.index_select(0, in.cluster.to(at::kLong)).to(weight_.dtype()).mm(weight_.t());
    const at::Tensor noisy = wb::add_noise(logits, sigma);
    const at::Tensor probs = at::softmax(noisy, 1);  // [B, E]
    auto [top_p, top_e] = probs.topk(k_, 1);

    const at::Tensor& image = in.image;  // broadcast each image's routing to its tokens
    wb::Routing r;
    r.experts = top_e.index_select(0, image);
    r.weights = top_p.index_select(0, image);
    r.kept = at::ones_like(r.experts, r.experts.options().dtype(at::kBool));
    r.probs = probs.index_select(0, image);
    r.gates = at::zeros_like(probs).scatter(1, top_e, top_p).index_select(0, image);
    r.tokens = x;
    r.tokens_per_image = in.tokens_per_image;
    return r;
  }

  std::int64_t k() const override { return k_; }

 private:
  at::Tensor centroids_;  // [m, D_c]: C, fixed
  at::Tensor weight_;     // [E, D_c]: W_g
  std::int64_t experts_, k_;
  double noise_std_;
};

}  // namespace

WORKBENCH_PLUGIN("gate cluster: MoCE cluster-conditional gate") {
  using wb::ParamSpec;
  registry.add_gate(
      "cluster",
      "MoCE: TopK(softmax(W_g · C[cluster] + noise)) on the clustering's centroids "
      "(data.clusters), one routing per image shared by its tokens",
      {
          ParamSpec::integer("k", 1, "experts per image").at_least(1),
          ParamSpec::real("noise_std", 1.0,
                          "training noise: N(0, (noise_std / E)^2) is added to the logits")
              .at_least(0),
          ParamSpec::optional("init_std", wb::ParamType::Float,
                              "std of the normal initialisation of W_g; unset = 1/sqrt(D_c), "
                              "D_c the centroids' width; 0 = zeros")
              .at_least(0),
      },
      [](const wb::Params& p, const wb::GateShape& s) {
        return std::make_shared<ClusterGate>(p, s);
      });
  // Before anything runs: k against the backbone's experts, and a clustering to route by.
  registry.add_check(
      wb::Kind::Gate, "cluster",
      [](const wb::Params& p, const wb::ValidationContext& c, wb::ValidationReport& r) {
        if (c.experts > 0)
          if (std::string problem = k_problem(p.integer("k"), c.experts); !problem.empty())
            r.error("k", problem);
        if (c.data && c.data->text("clusters").empty())
          r.error("",
                  "routes by each image's cluster: set data.clusters to the clusters.h5 "
                  "written by 'workbench cluster RUN_DIR' (docs/moce.md)");
      });
}
