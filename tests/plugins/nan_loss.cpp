// A loss that is finite until step `nan_at`, then NaN: the trainer must stop with an error
// naming the step and the loss, and keep the checkpoint and metrics written before.
#include <ATen/ATen.h>

#include <limits>

#include "workbench/loss.h"
#include "workbench/plugin.h"

namespace {
class NanAt final : public wb::Loss {
 public:
  explicit NanAt(const wb::Params& p) : nan_at_(p.integer("nan_at")) {}
  wb::LossRequirements requirements() const override { return {}; }
  wb::LossResult compute(const wb::StepState& s) override {
    at::Tensor v = s.online.at(0).cls.pow(2).mean();
    if (s.step >= nan_at_) v = v * std::numeric_limits<double>::quiet_NaN();
    return {v, {}};
  }

 private:
  std::int64_t nan_at_;
};
}  // namespace

WORKBENCH_PLUGIN("test: a loss that turns NaN") {
  registry.add_loss(
      "nan_at", "finite, then NaN from step nan_at",
      {wb::ParamSpec::integer("nan_at", 3, "first NaN step")},
      [](const wb::Params& p, const wb::LossContext&) { return std::make_shared<NanAt>(p); });
}
