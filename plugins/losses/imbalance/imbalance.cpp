// Loss "imbalance": MoCE's regulariser that makes the gates confident (docs/methods.md §8),
//
//   L_imbalance = − Σ_i ( std(G(x)_i) / mean(G(x)_i) )²    computed over the images of a batch,
//   value = weight × Σ over MoE layers of the mean over views of L_imbalance,
//
// from the online encoder's routings. G(x) of an image is read at its first token (the CLS
// token); with the `cluster` gate every token of an image has that gate vector.
//
// The printed formula leaves three things open; each is a parameter:
// - over = "experts" (default): i runs over the experts, std and mean over the images of the
//   batch: each expert's gate values should differ strongly between images (the negative of
//   V-MoE's per-expert coefficient of variation, "inspired by the importance and load losses").
//   over = "images": i runs over the images (the paper's n), std and mean over the experts of
//   one image's gate vector.
// - gate_vector = "dense" (default): the softmax over all experts before TopK; "sparse": the
//   TopK'd vector (Routing::gates), the symbol G(x) as printed. With K = 1 the sparse vector
//   makes the per-image term a constant (E, or E − 1 with the population std), and the
//   per-expert term only spreads an expert's own images apart (confident ones up, the others
//   down); the dense vector is what "makes G(x) sharper" for every image, as the paper says.
// - std = "sample" (default: torch.std, the PyTorch code base MoCE builds on) or "population".
// (std / mean)² is computed as var / mean², without a square root (finite gradient at var = 0);
// an expert whose mean is 0 (sparse vector, never chosen) contributes 0.
#include <ATen/ATen.h>

#include <stdexcept>
#include <string>
#include <tuple>

#include "workbench/loss.h"
#include "workbench/loss_terms.h"
#include "workbench/plugin.h"

namespace {

class Imbalance final : public wb::Loss {
 public:
  explicit Imbalance(const wb::Params& p)
      : weight_(p.real("weight")),
        over_experts_(p.text("over") == "experts"),
        dense_(p.text("gate_vector") == "dense"),
        sample_(p.text("std") == "sample") {}

  wb::LossRequirements requirements() const override { return {}; }

  // −Σ_i CV² of one layer's per-image gate vectors G [B, E].
  at::Tensor term(const at::Tensor& g) const {
    const std::int64_t dim = over_experts_ ? 0 : 1;  // the axis the statistics run over
    if (g.size(dim) < (sample_ ? 2 : 1))
      throw std::invalid_argument("loss imbalance: the sample std needs at least two " +
                                  std::string(over_experts_ ? "images" : "experts"));
    const auto n = static_cast<double>(g.size(dim));
    const at::Tensor mean = g.mean(dim, /*keepdim=*/true);
    const at::Tensor var = (g - mean).pow(2).sum(dim) / (sample_ ? n - 1 : n);
    const at::Tensor m = mean.squeeze(dim);
    const at::Tensor cv2 = at::where(m > 0, var / m.pow(2).clamp_min(1e-30), at::zeros_like(var));
    return -cv2.sum();
  }

  wb::LossResult compute(const wb::StepState& state) override {
    double confidence = 0;
    std::size_t layers = 0;
    const at::Tensor total =
        wb::sum_over_layers_mean_over_views(state, "imbalance", [&](const wb::Routing& r) {
          const at::Tensor& v = dense_ ? r.probs : r.gates;
          const std::int64_t tpi = r.tokens_per_image > 0 ? r.tokens_per_image : 1;
          const at::Tensor g = v.slice(0, 0, v.size(0), tpi);  // [B, E]: each image's first token
          confidence +=
              std::get<0>(r.probs.slice(0, 0, r.probs.size(0), tpi).max(1)).mean().item<double>();
          ++layers;
          return term(g);
        });
    wb::LossResult result;
    result.value = weight_ * total;
    result.metrics["imbalance"] = total.item<double>();
    // Mean over layers and views of the images' largest gate probability: what the loss raises.
    result.metrics["confidence"] = layers ? confidence / static_cast<double>(layers) : 0.0;
    return result;
  }

 private:
  double weight_;
  bool over_experts_, dense_, sample_;
};

}  // namespace

WORKBENCH_PLUGIN("loss imbalance: MoCE's gate-sharpening regulariser") {
  using wb::ParamSpec;
  registry.add_loss(
      "imbalance",
      "MoCE: −Σ_i (std(G(x)_i) / mean(G(x)_i))² over the batch, summed over MoE layers (mean over "
      "views); makes the gates confident, the opposite of V-MoE's balancing",
      {
          ParamSpec::real("weight", 0.01, "multiplies the sum (MoCE: 0.01)").at_least(0),
          ParamSpec::text("over", "experts",
                          "what i runs over: experts (std and mean over the batch's images) or "
                          "images (std and mean over one image's experts)")
              .one_of({"experts", "images"}),
          ParamSpec::text("gate_vector", "dense",
                          "G(x): dense = softmax over all experts (before TopK); sparse = the "
                          "TopK'd vector as printed (a constant at K = 1 when over = images)")
              .one_of({"dense", "sparse"}),
          ParamSpec::text("std", "sample",
                          "sample (n − 1, torch.std's default) or population standard deviation")
              .one_of({"sample", "population"}),
      },
      [](const wb::Params& p, const wb::LossContext&) { return std::make_shared<Imbalance>(p); });
}
