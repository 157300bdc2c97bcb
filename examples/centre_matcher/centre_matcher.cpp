// A third patch-matching method for OGAR, written outside the workbench tree: each query patch
// pairs with the key patch whose centre (in original-image coordinates) is nearest; the pair is
// valid when that distance is below `max_distance` query-patch widths.
#include <ATen/ATen.h>

#include "workbench/geometry.h"
#include "workbench/matcher.h"
#include "workbench/plugin.h"

namespace {

class CentreDistance final : public wb::Matcher {
 public:
  explicit CentreDistance(const wb::Params& p) : max_distance_(p.real("max_distance")) {}

  wb::Match match(const wb::MatchInput& in) override {
    const at::Tensor q = wb::patch_boxes(*in.query_view, in.grid);  // [B, N, 4] (x, y, w, h)
    const at::Tensor k = wb::patch_boxes(*in.key_view, in.grid);
    const at::Tensor qc = q.narrow(2, 0, 2) + q.narrow(2, 2, 2) / 2;  // centres [B, N, 2]
    const at::Tensor kc = k.narrow(2, 0, 2) + k.narrow(2, 2, 2) / 2;
    const at::Tensor distance = at::cdist(qc, kc);  // [B, N, N]
    auto [nearest, index] = distance.min(2);
    const at::Tensor width = q.select(2, 2);  // query patch widths [B, N]
    return {index, nearest < max_distance_ * width};
  }

 private:
  double max_distance_;
};

}  // namespace

WORKBENCH_PLUGIN("example out-of-tree matcher: nearest patch centre") {
  registry.add_matcher(
      "centre_distance", "pairs each query patch with the key patch of nearest centre",
      {wb::ParamSpec::real("max_distance", 0.5, "valid below this many query-patch widths")
           .above(0)},
      [](const wb::Params& p) { return std::make_shared<CentreDistance>(p); });
}
