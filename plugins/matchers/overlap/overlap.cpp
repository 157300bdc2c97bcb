// Matcher "overlap": OGAR's patch matching (CR-MoE §3.2, eq. 7; docs/methods.md §5). Every query
// patch pairs with the key patch of largest IoU in original-image coordinates (from the two views'
// crop boxes and flips); the pair counts only when that IoU is strictly above lambda. Depends on
// geometry alone, so OGAR computes it once per step for all MoE layers.
// Ties of the IoU (e.g. several key patches inside one large query patch) go to the lowest key
// index.
#include <ATen/ATen.h>

#include <stdexcept>

#include "workbench/geometry.h"
#include "workbench/matcher.h"
#include "workbench/plugin.h"

namespace {

class Overlap final : public wb::Matcher {
 public:
  explicit Overlap(const wb::Params& p) : lambda_(p.real("lambda")) {}

  wb::Match match(const wb::MatchInput& in) override {
    if (!in.query_view || !in.key_view || in.grid <= 0)
      throw std::invalid_argument("matcher overlap: needs both views' geometry and the grid");
    const at::Tensor iou = wb::box_iou(wb::patch_boxes(*in.query_view, in.grid),
                                       wb::patch_boxes(*in.key_view, in.grid));  // [B, N, N]
    // argmax returns the first of equal maxima (documented), so ties go to the lowest index.
    const at::Tensor index = iou.argmax(2);
    const at::Tensor best = iou.gather(2, index.unsqueeze(2)).squeeze(2);
    // Compared in the IoU's float precision, so an IoU of exactly lambda is invalid.
    return {index, best.gt(lambda_)};
  }

 private:
  double lambda_;
};

}  // namespace

WORKBENCH_PLUGIN("matcher overlap: OGAR's IoU matching of patches") {
  registry.add_matcher(
      "overlap",
      "pairs each query patch with the key patch of largest IoU in the original image; valid "
      "when IoU > lambda",
      {wb::ParamSpec::real("lambda", 0.2, "IoU threshold (strict: IoU > lambda counts)")
           .range(0, 1)},
      [](const wb::Params& p) { return std::make_shared<Overlap>(p); });
}
