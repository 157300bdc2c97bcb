// Matcher "fsm": feature-similarity matching (CR-MoE Table 6, after DenseCL / Li et al. 2021).
// Every query patch pairs with the key patch of largest cosine similarity; no threshold, so every
// pair is valid. source = "feature" compares the MoE layer's input tokens of the online (query)
// and momentum (key) encoders, as the paper describes; source = "gate" compares the gate vectors,
// as the CR-MoE reference code does. Either way the match differs per layer.
#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

#include "workbench/layers.h"
#include "workbench/matcher.h"
#include "workbench/plugin.h"

namespace {

class Fsm final : public wb::Matcher {
 public:
  explicit Fsm(const wb::Params& p) : gates_(p.text("source") == "gate") {}

  wb::Match match(const wb::MatchInput& in) override {
    const at::Tensor& q = gates_ ? in.query_gates : in.query_features;
    const at::Tensor& k = gates_ ? in.key_gates : in.key_features;
    if (!q.defined() || !k.defined() || q.dim() != 3 || k.dim() != 3)
      throw std::invalid_argument(std::string("matcher fsm: needs the query and key ") +
                                  (gates_ ? "gate vectors" : "patch features") + " as [B, N, D]");
    at::NoGradGuard no_grad;  // a match is a choice, not a function to differentiate
    const at::Tensor similarity =
        at::bmm(wb::l2_normalize(q.detach()), wb::l2_normalize(k.detach()).transpose(1, 2));
    const at::Tensor index = similarity.argmax(2);
    return {index, at::ones(index.sizes(), index.options().dtype(at::kBool))};
  }

  bool per_layer() const override { return true; }

 private:
  bool gates_;
};

}  // namespace

WORKBENCH_PLUGIN("matcher fsm: feature-similarity matching of patches") {
  registry.add_matcher(
      "fsm",
      "pairs each query patch with the most cosine-similar key patch (no threshold, all valid); "
      "per MoE layer",
      {wb::ParamSpec::text("source", "feature",
                           "what is compared: feature = the layer's input tokens (paper), gate = "
                           "the gate vectors (reference code)")
           .one_of({"feature", "gate"})},
      [](const wb::Params& p) { return std::make_shared<Fsm>(p); });
}
