// A well-formed plugin: one gate that sends every token to expert 0.
#include <ATen/ATen.h>

#include "workbench/gate.h"
#include "workbench/plugin.h"

namespace {
class FirstExpert : public wb::Gate {
 public:
  explicit FirstExpert(const wb::GateShape& s) : experts_(s.experts) {}
  wb::Routing route(const at::Tensor& x, const wb::GateInput& in) override {
    const auto T = x.size(0);
    wb::Routing r;
    r.experts = at::zeros({T, 1}, x.options().dtype(at::kLong));
    r.weights = at::ones({T, 1}, x.options());
    r.kept = at::ones({T, 1}, x.options().dtype(at::kBool));
    r.probs = at::zeros({T, experts_}, x.options());
    r.probs.select(1, 0).fill_(1);
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

WORKBENCH_PLUGIN("test: a gate that always picks expert 0") {
  registry.add_gate(
      "first_expert", "every token to expert 0",
      {wb::ParamSpec::real("unused", 0.5, "a parameter with a default").range(0, 1)},
      [](const wb::Params&, const wb::GateShape& s) { return std::make_shared<FirstExpert>(s); });
}
