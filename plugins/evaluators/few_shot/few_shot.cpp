// Few-shot transfer (docs/methods.md §7): k images per class of a data set (any [datasets.<name>]
// entry, or the run's own), a linear head on frozen eval-view features, top-1 on that data
// set's test split, mean ± std over several sampling seeds. k-shot has no validation set, so the
// head's lr and epochs are fixed parameters, not chosen.
#include <ATen/ATen.h>

#include <sstream>
#include <stdexcept>

#include "workbench/eval_tools.h"
#include "workbench/evaluator.h"
#include "workbench/plugin.h"

namespace {

at::Tensor as_tensor(const std::vector<double>& v) {
  return at::tensor(v, at::TensorOptions().dtype(at::kDouble));
}

class FewShot final : public wb::Evaluator {
 public:
  explicit FewShot(const wb::Params& p)
      : dataset_(p.text("dataset")),
        shots_(p.integers("shots")),
        seeds_(p.integer("seeds")),
        lr_(p.real("lr")),
        epochs_(p.integer("epochs")),
        batch_(p.integer("batch")),
        batch_norm_(p.boolean("batch_norm")) {}

  wb::EvalResult evaluate(wb::EvalContext& ctx) override {
    const wb::FeatureSet pool = ctx.features(dataset_, wb::Split::Train);
    const wb::FeatureSet test = ctx.features(dataset_, wb::Split::Test);
    const auto classes = wb::count_classes({pool.labels});
    wb::EvalResult r;
    for (const std::int64_t k : shots_) {
      const std::string name = std::to_string(k) + "shot";
      std::vector<double> top1;
      for (std::int64_t seed = 0; seed < seeds_; ++seed) {
        const wb::Draw draw = wb::draw_shots(pool.labels, k, static_cast<std::uint64_t>(seed));
        const wb::FeatureSet train = wb::take(pool, draw.drawn);
        if (seed == 0) {
          std::vector<double> counts;
          for (auto c : wb::class_counts(train.labels, classes))
            counts.push_back(static_cast<double>(c));
          r.arrays[name + "_per_class"] = as_tensor(counts);
        }
        wb::LinearHeadOptions options;
        options.lrs = {lr_};
        options.batch_norm = batch_norm_;
        options.seed = ctx.seed() + static_cast<std::uint64_t>(seed);
        options.device = ctx.device();
        wb::LinearHeads head(pool.features.size(1), classes, options);
        wb::train_heads(head, train, epochs_, batch_, options.seed);
        top1.push_back(head.accuracy(test, 1).at(0));
      }
      const wb::MeanStd m = wb::mean_std(top1);
      r.scalars[name + "_mean"] = m.mean;
      r.scalars[name + "_std"] = m.std;
      r.arrays[name] = as_tensor(top1);
      std::ostringstream log;
      log << "few_shot: " << k << " shots per class of "
          << (dataset_.empty() ? "the run's data" : dataset_) << ": top-1 "
          << wb::format_number(m.mean) << " ± " << wb::format_number(m.std, 2) << " % over "
          << seeds_ << " seeds";
      ctx.info(log.str());
    }
    return r;
  }

 private:
  std::string dataset_;
  std::vector<std::int64_t> shots_;
  std::int64_t seeds_;
  double lr_;
  std::int64_t epochs_, batch_;
  bool batch_norm_;
};

}  // namespace

WORKBENCH_PLUGIN("few-shot transfer evaluator") {
  registry.add_evaluator(
      "few_shot",
      "k images per class, linear head on frozen features, test top-1 mean ± std over seeds "
      "(scalars <k>shot_mean, <k>shot_std)",
      {wb::ParamSpec::text("dataset", "",
                           "data set: a [datasets.<name>] entry ('' = the run's own)"),
       wb::ParamSpec::integers("shots", {4, 10}, "images per class, one result each").at_least(1),
       wb::ParamSpec::integer("seeds", 5, "sampling seeds 0..seeds-1").at_least(1),
       wb::ParamSpec::real("lr", 0.1, "fixed learning rate (no validation set to choose one)")
           .above(0),
       wb::ParamSpec::integer("epochs", 100, "passes over the k-shot set").at_least(1),
       wb::ParamSpec::integer("batch", 256, "images per step").at_least(2),
       wb::ParamSpec::boolean("batch_norm", true, "batch norm without affine before the head")},
      [](const wb::Params& p) { return std::make_shared<FewShot>(p); });
}
