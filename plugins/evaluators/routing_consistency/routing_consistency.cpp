// Routing consistency probe (CR-MoE Fig. 3, methods.md §6): two views of the same images with
// colour augmentation only (no crop, no flip: token positions correspond), both through the
// backbone in eval mode. Per MoE layer, the mean number of experts shared by the top-k sets of
// corresponding tokens (same image, same position) and of non-corresponding tokens (image i of
// view 1 against image i+1 (mod batch) of view 2, same position), for CLS and patch tokens.
// A backbone without MoE layers (a dense ViT in a sweep with MoE rows) has nothing to measure:
// the result is moe_layers = 0 and no curves, so one evaluator list serves every row.
#include <ATen/ATen.h>

#include <array>
#include <sstream>
#include <stdexcept>

#include "workbench/eval_tools.h"
#include "workbench/evaluator.h"
#include "workbench/plugin.h"

namespace {

// Shared experts between the top-k sets a[b, p, :] and b[b, p, :] -> [B, P]. The k choices of
// one token are distinct, so counting equal pairs counts the intersection.
at::Tensor shared_experts(const at::Tensor& a, const at::Tensor& b) {
  return a.unsqueeze(3).eq(b.unsqueeze(2)).sum({2, 3}).to(at::kDouble);
}

class RoutingConsistency final : public wb::Evaluator {
 public:
  explicit RoutingConsistency(const wb::Params& p)
      : dataset_(p.text("dataset")),
        split_(wb::split_named(p.text("split"))),
        images_(p.integer("images")) {}

  wb::EvalResult evaluate(wb::EvalContext& ctx) override {
    auto data = ctx.dataset(dataset_, split_);
    if (images_ < data->size())
      data =
          wb::subset(data, wb::spread_items(data->size(), images_), "routing-consistency images");
    const wb::ViewRecipe recipe = ctx.recipe("color_only", dataset_);
    wb::LoaderOptions options = ctx.loader_options();
    options.shuffle = false;
    options.drop_last = false;
    // Two views with the same recipe: the loader draws each view's colour changes separately.
    wb::Loader loader(data, {recipe, recipe}, options);
    loader.start_epoch(0);

    // Sums per layer: [cls corr, cls non-corr, patch corr, patch non-corr] and their counts.
    std::vector<std::array<double, 4>> sum, count;
    while (auto batch = loader.next()) {
      const wb::Batch b = batch->to(ctx.device());
      const wb::BackboneOutput one = wb::eval_forward(ctx.backbone(), b, 0);
      if (one.routings.empty()) {
        ctx.info("routing_consistency: the backbone has no MoE layer; nothing to measure");
        wb::EvalResult none;
        none.scalars["moe_layers"] = 0;
        return none;
      }
      const wb::BackboneOutput two = wb::eval_forward(ctx.backbone(), b, 1);
      sum.resize(one.routings.size(), {0, 0, 0, 0});
      count.resize(one.routings.size(), {0, 0, 0, 0});
      const auto B = b.size();
      for (std::size_t l = 0; l < one.routings.size(); ++l) {
        const at::Tensor e1 =
            one.routings[l].experts.reshape({B, -1, one.routings[l].experts.size(1)});
        const at::Tensor e2 = two.routings[l].experts.reshape(e1.sizes());
        const auto P = e1.size(1);
        const at::Tensor corr = shared_experts(e1, e2);
        sum[l][0] += corr.select(1, 0).sum().item<double>();
        count[l][0] += static_cast<double>(B);
        sum[l][2] += corr.narrow(1, 1, P - 1).sum().item<double>();
        count[l][2] += static_cast<double>(B * (P - 1));
        if (B < 2) continue;  // no other image to pair with in this batch
        const at::Tensor other = shared_experts(e1, e2.roll(-1, 0));  // image i vs i+1 mod B
        sum[l][1] += other.select(1, 0).sum().item<double>();
        count[l][1] += static_cast<double>(B);
        sum[l][3] += other.narrow(1, 1, P - 1).sum().item<double>();
        count[l][3] += static_cast<double>(B * (P - 1));
      }
    }
    if (sum.empty()) throw std::runtime_error("routing_consistency: no images");

    static const char* names[4] = {"cls_corresponding", "cls_noncorresponding",
                                   "patch_corresponding", "patch_noncorresponding"};
    wb::EvalResult r;
    r.scalars["moe_layers"] = static_cast<double>(sum.size());
    std::ostringstream log;
    log << "routing_consistency on " << data->size() << " images, shared experts per layer:";
    for (int m = 0; m < 4; ++m) {
      std::vector<double> per_layer;
      double total = 0;
      for (std::size_t l = 0; l < sum.size(); ++l) {
        per_layer.push_back(count[l][m] > 0 ? sum[l][m] / count[l][m] : 0.0);
        total += per_layer.back();
      }
      r.arrays[names[m]] = at::tensor(per_layer, at::TensorOptions().dtype(at::kDouble));
      r.scalars[std::string(names[m]) + "_mean"] = total / static_cast<double>(sum.size());
      log << "\n  " << names[m] << ":";
      for (double v : per_layer) log << " " << wb::format_number(v, 3);
    }
    ctx.info(log.str());
    return r;
  }

 private:
  std::string dataset_;
  wb::Split split_;
  std::int64_t images_;
};

}  // namespace

WORKBENCH_PLUGIN("routing consistency probe") {
  registry.add_evaluator(
      "routing_consistency",
      "shared top-k experts of corresponding / non-corresponding tokens of two colour-only "
      "views, per MoE layer, CLS and patches (CR-MoE Fig. 3)",
      {wb::ParamSpec::text("dataset", "", "data set name ('' = the run's own)"),
       wb::ParamSpec::text("split", "test", "split the images come from")
           .one_of({"train", "val", "test"}),
       wb::ParamSpec::integer("images", 1000, "images probed (spread evenly over the split)")
           .at_least(2)},
      [](const wb::Params& p) { return std::make_shared<RoutingConsistency>(p); });
}
