// Weighted k-nearest-neighbour classification on L2-normalised CLS features (InstDisc / MoCo
// monitor, docs/methods.md §7): the training features are the memory bank; each test image's k most
// similar bank entries vote for their class with weight exp(similarity / tau).
#include <ATen/ATen.h>

#include <algorithm>
#include <stdexcept>

#include "workbench/eval_tools.h"
#include "workbench/evaluator.h"
#include "workbench/layers.h"
#include "workbench/plugin.h"

namespace {

class Knn final : public wb::Evaluator {
 public:
  explicit Knn(const wb::Params& p)
      : dataset_(p.text("dataset")),
        split_(wb::split_named(p.text("split"))),
        k_(p.integer("k")),
        tau_(p.real("tau")),
        chunk_(p.integer("chunk")),
        views_(p.integers("views")) {}

  wb::EvalResult evaluate(wb::EvalContext& ctx) override {
    return wb::per_view(views_, [&](std::int64_t view) { return evaluate_view(ctx, view); });
  }

 private:
  wb::EvalResult evaluate_view(wb::EvalContext& ctx, std::int64_t view) {
    const wb::FeatureSet bank = ctx.features(dataset_, wb::Split::Train, view);
    const wb::FeatureSet queries = ctx.features(dataset_, split_, view);
    if (bank.features.size(0) == 0 || queries.features.size(0) == 0)
      throw std::runtime_error("knn: empty memory bank or query set");
    const auto classes = wb::count_classes({bank.labels, queries.labels});
    const at::Tensor bank_n = wb::l2_normalize(bank.features.to(at::kFloat));
    const auto n = queries.features.size(0);
    std::int64_t top1 = 0, top5 = 0;
    // Chunks of queries keep the similarity matrix at chunk x bank entries.
    for (std::int64_t s = 0; s < n; s += chunk_) {
      const auto len = std::min(chunk_, n - s);
      const at::Tensor q = queries.features.narrow(0, s, len).to(at::kFloat);
      const at::Tensor votes = vote(bank_n, bank.labels, q, classes);
      const at::Tensor labels = queries.labels.narrow(0, s, len);
      top1 += wb::topk_correct(votes, labels, 1);
      top5 += wb::topk_correct(votes, labels, 5);
    }
    wb::EvalResult r;
    r.scalars["top1"] = 100.0 * static_cast<double>(top1) / static_cast<double>(n);
    r.scalars["top5"] = 100.0 * static_cast<double>(top5) / static_cast<double>(n);
    ctx.info("knn (" + (view ? "view " + std::to_string(view) + ", " : std::string()) + "k " +
             std::to_string(k_) + ", tau " + wb::format_number(tau_) + "): top-1 " +
             wb::format_number(r.scalars["top1"]) + " % on " + std::to_string(n) +
             " images, bank " + std::to_string(bank.features.size(0)));
    return r;
  }

  // Class scores [B, C] of queries [B, D] against the normalised bank [N, D].
  at::Tensor vote(const at::Tensor& bank, const at::Tensor& bank_labels, const at::Tensor& queries,
                  std::int64_t classes) const {
    const at::Tensor similarity = at::matmul(wb::l2_normalize(queries), bank.t());
    const auto k = std::min<std::int64_t>(k_, bank.size(0));
    auto [sim, idx] = similarity.topk(k, 1);
    const at::Tensor weights = (sim / tau_).exp();
    const at::Tensor neighbour_labels = bank_labels.index_select(0, idx.flatten()).view_as(idx);
    return at::zeros({queries.size(0), classes}, weights.options())
        .scatter_add_(1, neighbour_labels, weights);
  }

  std::string dataset_;
  wb::Split split_;
  std::int64_t k_;
  double tau_;
  std::int64_t chunk_;
  std::vector<std::int64_t> views_;
};

}  // namespace

WORKBENCH_PLUGIN("weighted k-NN evaluator") {
  registry.add_evaluator(
      "knn",
      "weighted k-NN on L2-normalised CLS features (train split = memory bank): top-1 and top-5",
      {wb::ParamSpec::integer("k", 20, "neighbours that vote").at_least(1),
       wb::ParamSpec::real("tau", 0.07, "temperature: a neighbour votes exp(similarity / tau)")
           .above(0),
       wb::ParamSpec::text("dataset", "", "data set name ('' = the run's own)"),
       wb::ParamSpec::text("split", "test", "split classified against the train bank")
           .one_of({"val", "test"}),
       wb::ParamSpec::integer("chunk", 512, "queries per similarity block (bounds memory)")
           .at_least(1),
       wb::ParamSpec::integers("views", {0},
                               "one evaluation per view index the forward passes claim (with "
                               "the sep-ViT's fixed gate: the expert path); results of view v > "
                               "0 are named <metric>_view<v>")
           .at_least(0)},
      [](const wb::Params& p) { return std::make_shared<Knn>(p); });
  registry.add_check(wb::Kind::Evaluator, "knn", wb::check_views);
}
