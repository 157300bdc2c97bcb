// Gate "cluster": MoCE's cluster-conditional gate (docs/methods.md §8). The gate input is a
// learnable embedding C[c] of the image's cluster id c, so G = TopK(softmax(W_g · C[c] + noise)) is
// one routing per image that all its tokens share. Noise as in noisy_topk (std noise_std / E,
// training only); importance loss (and load loss while noise is on) over the images of the batch.
#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "workbench/balance.h"
#include "workbench/gate.h"
#include "workbench/plugin.h"

namespace {

class ClusterGate : public wb::Gate {
 public:
  ClusterGate(const wb::Params& p, const wb::GateShape& shape)
      : experts_(shape.experts),
        clusters_(p.integer("clusters")),
        k_(p.integer("k")),
        noise_std_(p.real("noise_std")) {
    if (k_ < 1 || k_ > experts_)
      throw std::invalid_argument("gate cluster: k = " + std::to_string(k_) +
                                  " must be between 1 and the number of experts (" +
                                  std::to_string(experts_) + ")");
    const auto width = p.integer("embed_dim") > 0 ? p.integer("embed_dim") : shape.dim;
    const double init_std = p.maybe_real("init_std").value_or(1.0 / std::sqrt(double(width)));
    embedding_ = register_parameter("embedding", at::randn({clusters_, width}));
    weight_ = register_parameter("weight", at::randn({experts_, width}) * init_std);
  }

  wb::Routing route(const at::Tensor& x, const wb::GateInput& in) override {
    if (!in.cluster.defined())
      throw std::invalid_argument(
          "gate cluster: the batch has no cluster ids; MoCE routing needs the cluster of every "
          "image (RoutingContext::cluster, from the clustering step)");
    if (!in.image.defined() || in.image.size(0) != x.size(0))
      throw std::invalid_argument("gate cluster: needs the image index of every token");
    const auto lo = in.cluster.min().item<std::int64_t>();
    const auto hi = in.cluster.max().item<std::int64_t>();
    if (lo < 0 || hi >= clusters_)
      throw std::invalid_argument("gate cluster: cluster id " + std::to_string(lo < 0 ? lo : hi) +
                                  " is outside the table of " + std::to_string(clusters_) +
                                  " clusters (parameter 'clusters')");

    const double sigma = in.training ? noise_std_ / static_cast<double>(experts_) : 0.0;
    const at::Tensor logits = embedding_.index_select(0, in.cluster.to(at::kLong)).mm(weight_.t());
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
    r.aux["importance"] = wb::importance_loss(probs);
    if (sigma > 0) r.aux["load"] = wb::load_loss(logits, noisy, sigma, k_);
    r.tokens = x;
    r.tokens_per_image = in.tokens_per_image;
    return r;
  }

  std::int64_t k() const override { return k_; }

 private:
  at::Tensor embedding_;  // [clusters, width]: C
  at::Tensor weight_;     // [E, width]: W_g
  std::int64_t experts_, clusters_, k_;
  double noise_std_;
};

}  // namespace

WORKBENCH_PLUGIN("gate cluster: MoCE cluster-conditional gate") {
  using wb::ParamSpec;
  registry.add_gate(
      "cluster",
      "MoCE: TopK(softmax(W_g · C[cluster] + noise)), one routing per image shared by its tokens",
      {
          ParamSpec::integer("clusters", 256, "entries of the cluster embedding table").at_least(1),
          ParamSpec::integer("embed_dim", 0, "width of a cluster embedding; 0 = token width")
              .at_least(0),
          ParamSpec::integer("k", 1, "experts per image").at_least(1),
          ParamSpec::real("noise_std", 1.0,
                          "training noise: N(0, (noise_std / E)^2) is added to the logits")
              .at_least(0),
          ParamSpec::optional("init_std", wb::ParamType::Float,
                              "std of the normal initialisation of W_g; unset = "
                              "1/sqrt(embed_dim); 0 = zeros (C starts N(0, 1))")
              .at_least(0),
      },
      [](const wb::Params& p, const wb::GateShape& s) {
        return std::make_shared<ClusterGate>(p, s);
      });
}
