// Gate "fixed": sep-ViT routing (CR-MoE Table 2; docs/methods.md §3). Every token of view i goes to
// expert i, in the online and the momentum encoder alike, in training and in evaluation: an
// evaluator picks the path it measures with its `view` parameter (the view index its forward
// passes claim), so one trained sep-ViT is evaluated on both paths. Weight 1, no auxiliary
// losses.
//
// sep-ViT-S as an experiment file:
//   backbone = { plugin = "vit", dim = 384, depth = 12, heads = 6, patch = 16,
//                experts = 2, expert_ratio = 4, moe_every = 2 }   # hidden 4d: full-size experts
//   gate = { plugin = "fixed" }
//   evaluators: e.g. { plugin = "linear_probe", views = [0, 1] } (both paths)
#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

#include "workbench/gate.h"
#include "workbench/plugin.h"

namespace {

// View i goes to expert i, so the views the losses ask for per image must have an expert each;
// checked before any point runs (Registry::add_check). The route still refuses a view index
// with no expert, for losses without a check and for evaluations. Declares the routable views
// (one per expert): the evaluators' checks refuse a `views` entry past them.
void check(const wb::Params&, const wb::ValidationContext& c, wb::ValidationReport& r) {
  r.routed_views = c.experts;
  if (c.experts > 0 && c.views > c.experts)
    r.error("", "the losses ask for " + std::to_string(c.views) +
                    " views per image, but the backbone's MoE layers have " +
                    std::to_string(c.experts) + (c.experts == 1 ? " expert" : " experts") +
                    " (view i uses expert i)");
}

class FixedGate : public wb::Gate {
 public:
  FixedGate(const wb::Params&, const wb::GateShape& shape) : experts_(shape.experts) {}

  wb::Routing route(const at::Tensor& x, const wb::GateInput& in) override {
    const auto T = x.size(0);
    const auto long_opts = x.options().dtype(at::kLong);
    at::Tensor expert;
    if (in.view.defined()) {
      if (!in.image.defined() || in.image.size(0) != T)
        throw std::invalid_argument("gate fixed: needs the image index of each of the " +
                                    std::to_string(T) + " tokens (GateInput::image)");
      // Checked where the check costs no device read (CPU tensors); on a GPU an out-of-range
      // expert stops the dispatch's index operations instead.
      const auto lo = in.view.is_cpu() ? in.view.min().item<std::int64_t>() : 0;
      const auto hi = in.view.is_cpu() ? in.view.max().item<std::int64_t>() : 0;
      if (lo < 0 || hi >= experts_)
        throw std::invalid_argument("gate fixed: view index " + std::to_string(lo < 0 ? lo : hi) +
                                    " has no expert; the layer has " + std::to_string(experts_) +
                                    " experts (one per view)");
      expert = in.view.to(long_opts).index_select(0, in.image);
    } else {
      expert = at::zeros({T}, long_opts);  // no view given: every image is view 0
    }
    wb::Routing r;
    r.experts = expert.unsqueeze(1);
    r.weights = at::ones({T, 1}, x.options());
    r.kept = at::ones({T, 1}, x.options().dtype(at::kBool));
    r.probs = at::zeros({T, experts_}, x.options()).scatter_(1, r.experts, 1.0);
    r.gates = r.probs;
    r.tokens = x;
    r.tokens_per_image = in.tokens_per_image;
    return r;
  }

  std::int64_t k() const override { return 1; }

 private:
  std::int64_t experts_;
};

}  // namespace

WORKBENCH_PLUGIN("gate fixed: sep-ViT routing by view") {
  registry.add_gate(
      "fixed",
      "sep-ViT: view i always uses expert i, in training and evaluation (k = 1, weight 1, no "
      "auxiliary losses); evaluators choose the path with their view parameter",
      {}, [](const wb::Params& p, const wb::GateShape& s) {
        return std::make_shared<FixedGate>(p, s);
      });
  registry.add_check(wb::Kind::Gate, "fixed", check);
}
