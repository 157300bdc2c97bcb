// Routing consistency probe (CR-MoE Fig. 3, docs/methods.md §6): two views of the same images with
// colour augmentation only (no crop, no flip: token positions correspond), both through the
// backbone in eval mode. Per MoE layer, the mean number of experts shared by the top-k sets of
// corresponding tokens (same image, same position) and of non-corresponding tokens (image i of
// view 1 against image i+1 (mod batch) of view 2, same position), for CLS and patch tokens.
// Two further measures tell which choice agrees: the fraction of pairs whose first choices are
// the same expert (first_corresponding, first_noncorresponding), and the mean weight of a
// token's second choice relative to its first (weight_ratio: 1 = equal weights, near 0 = the
// second expert barely counts).
// A backbone without MoE layers (a dense ViT in a sweep with MoE rows) has nothing to measure:
// the result is moe_layers = 0 and no curves, so one evaluator list serves every row.
#include <ATen/ATen.h>

#include <map>
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

// 1 where the first choices (the top expert) of a[b, p] and b[b, p] agree -> [B, P].
at::Tensor same_first(const at::Tensor& a, const at::Tensor& b) {
  return a.select(2, 0).eq(b.select(2, 0)).to(at::kDouble);
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
    const wb::ViewRecipe recipe = ctx.recipe("color_only");
    wb::LoaderOptions options = ctx.loader_options();
    options.shuffle = false;
    options.drop_last = false;
    // Two views with the same recipe: the loader draws each view's colour changes separately.
    wb::Loader loader(data, {recipe, recipe}, options);
    loader.start_epoch(0);

    // Per layer and measure: the sum over token pairs (or tokens) and their count.
    std::vector<std::map<std::string, std::pair<double, double>>> sums;
    auto add = [&](std::size_t layer, const std::string& name, const at::Tensor& per_image) {
      // per_image: [B, P]; CLS = column 0, patches = the rest.
      auto& cls = sums[layer]["cls_" + name];
      cls.first += per_image.select(1, 0).sum().item<double>();
      cls.second += static_cast<double>(per_image.size(0));
      auto& patch = sums[layer]["patch_" + name];
      patch.first += per_image.narrow(1, 1, per_image.size(1) - 1).sum().item<double>();
      patch.second += static_cast<double>(per_image.size(0) * (per_image.size(1) - 1));
    };
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
      sums.resize(one.routings.size());
      const auto B = b.size();
      for (std::size_t l = 0; l < one.routings.size(); ++l) {
        const auto k = one.routings[l].experts.size(1);
        const at::Tensor e1 = one.routings[l].experts.reshape({B, -1, k});
        const at::Tensor e2 = two.routings[l].experts.reshape(e1.sizes());
        add(l, "corresponding", shared_experts(e1, e2));
        add(l, "first_corresponding", same_first(e1, e2));
        if (k >= 2)  // how much the second choice weighs against the first, both views
          for (const auto* out : {&one, &two}) {
            const at::Tensor w = out->routings[l].weights.reshape({B, -1, k}).to(at::kDouble);
            add(l, "weight_ratio", w.select(2, 1) / w.select(2, 0).clamp_min(1e-12));
          }
        if (B < 2) continue;                      // no other image to pair with in this batch
        const at::Tensor other = e2.roll(-1, 0);  // image i of view 1 vs image i+1 of view 2
        add(l, "noncorresponding", shared_experts(e1, other));
        add(l, "first_noncorresponding", same_first(e1, other));
      }
    }
    if (sums.empty()) throw std::runtime_error("routing_consistency: no images");

    wb::EvalResult r;
    r.scalars["moe_layers"] = static_cast<double>(sums.size());
    std::ostringstream log;
    log << "routing_consistency on " << data->size() << " images, per MoE layer:";
    for (const auto& [name, unused] : sums.front()) {
      std::vector<double> per_layer;
      double total = 0;
      for (const auto& layer : sums) {
        const auto it = layer.find(name);
        per_layer.push_back(it != layer.end() && it->second.second > 0
                                ? it->second.first / it->second.second
                                : 0.0);
        total += per_layer.back();
      }
      r.arrays[name] = at::tensor(per_layer, at::TensorOptions().dtype(at::kDouble));
      r.scalars[name + "_mean"] = total / static_cast<double>(sums.size());
      log << "\n  " << name << ":";
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
