// Expert x class routing map (MoCE Fig. 3, docs/methods.md §6): for every MoE layer, the fraction
// of each class's tokens (all tokens, or CLS tokens only) that have each expert among their top-k
// choices, counted with the backbone in eval mode on eval-recipe views. Each column therefore
// sums to k. Written as a heat map PNG per layer plus the matrix [layers, experts, classes].
// Summary per layer (MoCE §4.2: "expert 3 is selected most of the time (91.8 % of the classes)"):
// every class with tokens has a dominant expert, the one with the largest fraction of its
// tokens (the lowest index on ties); top_expert_class_share = the largest share of classes
// dominated by one expert (1 / experts when spread evenly, 1 when one expert takes every class),
// dominant_fraction = the mean over those classes of their dominant expert's fraction / k
// (1 when each class's tokens all go to one expert).
#include <ATen/ATen.h>

#include <algorithm>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "workbench/draw.h"
#include "workbench/eval_tools.h"
#include "workbench/evaluator.h"
#include "workbench/plugin.h"

namespace {

class RoutingMap final : public wb::Evaluator {
 public:
  explicit RoutingMap(const wb::Params& p)
      : dataset_(p.text("dataset")),
        split_name_(p.text("split")),
        split_(wb::split_named(split_name_)),
        images_(p.integer("images")),
        cls_only_(p.text("tokens") == "cls"),
        cell_(p.integer("cell")) {}

  wb::EvalResult evaluate(wb::EvalContext& ctx) override {
    auto data = ctx.dataset(dataset_, split_);
    if (images_ < data->size())
      data = wb::subset(data, wb::spread_items(data->size(), images_), "routing-map images");
    wb::LoaderOptions options = ctx.loader_options();
    options.shuffle = false;
    options.drop_last = false;
    wb::Loader loader(data, {ctx.recipe("eval")}, options);
    loader.start_epoch(0);

    const std::int64_t classes = data->classes();
    at::Tensor hits;  // [L, E * C]: top-k choices per (expert, class)
    at::Tensor tokens = at::zeros({classes}, at::TensorOptions().dtype(at::kDouble));
    std::int64_t experts = 0, k = 1;
    while (auto batch = loader.next()) {
      const wb::Batch b = batch->to(ctx.device());
      const wb::BackboneOutput out = wb::eval_forward(ctx.backbone(), b);
      if (out.routings.empty())
        throw std::runtime_error("routing_map: the backbone has no MoE layer");
      const auto L = static_cast<std::int64_t>(out.routings.size());
      experts = out.routings[0].num_experts();
      if (!hits.defined()) hits = at::zeros({L, experts * classes}, tokens.options());
      const at::Tensor labels = batch->labels;  // CPU
      const auto B = b.size();
      std::int64_t per_image = 0;
      for (std::int64_t l = 0; l < L; ++l) {
        const wb::Routing& routing = out.routings[static_cast<std::size_t>(l)];
        k = routing.experts.size(1);
        at::Tensor chosen = routing.experts.to(at::kCPU).reshape({B, -1, k});
        if (cls_only_) chosen = chosen.narrow(1, 0, 1);
        per_image = chosen.size(1);
        const at::Tensor cell = chosen * classes + labels.view({B, 1, 1});
        hits[l].add_(at::bincount(cell.flatten(), {}, experts * classes).to(at::kDouble));
      }
      tokens.add_(at::bincount(labels, {}, classes).to(at::kDouble) *
                  static_cast<double>(per_image));
    }
    if (!hits.defined()) throw std::runtime_error("routing_map: no images");
    const auto L = hits.size(0);
    const at::Tensor fraction =
        (hits.view({L, experts, classes}) / tokens.clamp_min(1).view({1, 1, classes})).contiguous();

    wb::EvalResult r;
    summarise(fraction, tokens, k, r);
    r.arrays["fraction"] = fraction;
    r.arrays["tokens_per_class"] = tokens;
    const std::string tag = "routing_map_" + (dataset_.empty() ? "" : dataset_ + "_") +
                            split_name_ + "_" + (cls_only_ ? "cls" : "all");
    std::ofstream legend(ctx.output_dir() / (tag + ".txt"));
    legend << "routing map (" << (cls_only_ ? "CLS tokens" : "all tokens") << ", " << split_name_
           << " split, " << data->describe() << ")\n"
           << "rows: experts 0.." << experts - 1 << "; columns: classes 0.." << classes - 1
           << "\ncolour: fraction of the class's tokens with the expert among their top-k "
              "choices (viridis, 0 = dark, the file's maximum = yellow)\n";
    for (std::int64_t l = 0; l < L; ++l) {
      const at::Tensor m = fraction[l].contiguous();
      const std::vector<double> values(m.data_ptr<double>(), m.data_ptr<double>() + m.numel());
      const std::string file = tag + "_moe" + std::to_string(l) + ".png";
      const double vmax = m.max().item<double>();
      wb::write_png((ctx.output_dir() / file).string(),
                    wb::heatmap(values, experts, classes, cell_, vmax));
      legend << file << ": MoE layer " << l << ", maximum " << vmax << "\n";
      r.files.push_back(file);
    }
    legend.close();
    if (!legend) throw std::runtime_error("routing_map: cannot write " + tag + ".txt");
    r.files.push_back(tag + ".txt");
    ctx.info("routing_map: " + std::to_string(L) + " layers x " + std::to_string(experts) +
             " experts x " + std::to_string(classes) + " classes -> " + tag + "_moe*.png");
    return r;
  }

  // The per-layer summaries of fraction [L, E, C] over classes with at least one token.
  static void summarise(const at::Tensor& fraction, const at::Tensor& tokens, std::int64_t k,
                        wb::EvalResult& r) {
    const auto L = fraction.size(0), E = fraction.size(1), C = fraction.size(2);
    const at::Tensor f = fraction.to(at::kDouble).contiguous();
    const at::Tensor n = tokens.to(at::kDouble).contiguous();
    const double* v = f.data_ptr<double>();
    std::vector<double> top_share(static_cast<std::size_t>(L)), dominant(top_share.size());
    for (std::int64_t l = 0; l < L; ++l) {
      std::vector<std::int64_t> wins(static_cast<std::size_t>(E), 0);
      double best_sum = 0;
      std::int64_t classes = 0;
      for (std::int64_t c = 0; c < C; ++c) {
        if (n[c].item<double>() <= 0) continue;
        std::int64_t best = 0;  // the lowest index wins a tie
        for (std::int64_t e = 1; e < E; ++e)
          if (v[(l * E + e) * C + c] > v[(l * E + best) * C + c]) best = e;
        ++wins[static_cast<std::size_t>(best)];
        best_sum += v[(l * E + best) * C + c];
        ++classes;
      }
      if (classes == 0) return;
      const auto most = *std::max_element(wins.begin(), wins.end());
      const auto i = static_cast<std::size_t>(l);
      top_share[i] = static_cast<double>(most) / static_cast<double>(classes);
      dominant[i] = best_sum / static_cast<double>(classes) / static_cast<double>(k);
      const std::string layer = "moe" + std::to_string(l) + "/";
      r.scalars[layer + "top_expert_class_share"] = top_share[i];
      r.scalars[layer + "dominant_fraction"] = dominant[i];
    }
    const auto options = at::TensorOptions().dtype(at::kDouble);
    r.arrays["top_expert_class_share"] = at::tensor(top_share, options);
    r.arrays["dominant_fraction"] = at::tensor(dominant, options);
  }

 private:
  std::string dataset_, split_name_;
  wb::Split split_;
  std::int64_t images_;
  bool cls_only_;
  std::int64_t cell_;
};

}  // namespace

WORKBENCH_PLUGIN("expert x class routing map") {
  registry.add_evaluator(
      "routing_map",
      "per MoE layer: fraction of each class's tokens routed to each expert (top-k), heat map "
      "PNG + matrix (MoCE Fig. 3)",
      {wb::ParamSpec::text("dataset", "", "data set name ('' = the run's own)"),
       wb::ParamSpec::text("split", "test", "split the images come from")
           .one_of({"train", "val", "test"}),
       wb::ParamSpec::integer("images", 1000, "images counted (spread evenly over the split)")
           .at_least(1),
       wb::ParamSpec::text("tokens", "all", "all tokens, or the CLS token of each image")
           .one_of({"all", "cls"}),
       wb::ParamSpec::integer("cell", 16, "pixels per heat-map cell").range(4, 128)},
      [](const wb::Params& p) { return std::make_shared<RoutingMap>(p); });
  // Before anything runs: a dense backbone (declared shape with no MoE layer) routes nothing.
  registry.add_check(
      wb::Kind::Evaluator, "routing_map",
      [](const wb::Params&, const wb::ValidationContext& c, wb::ValidationReport& r) {
        if (c.feature_dim > 0 && c.moe_layers == 0)
          r.error("", "the backbone has no MoE layer (a dense model routes nothing)");
      });
}
