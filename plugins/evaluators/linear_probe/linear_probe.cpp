// Linear probe (docs/methods.md §7): frozen backbone in eval mode, CLS feature, batch norm without
// affine, then linear classifiers trained with SGD (momentum 0.9, no weight decay, cosine lr),
// one per learning rate of a grid, all at once, on crop + flip views (MoCo v3's protocol; or on
// the cached eval-view features, which is much cheaper on a CPU). The head is chosen on a
// validation split carved from the training set; only the chosen head ever sees the test split.
// A choice at the edge of the grid is flagged: the best rate may lie outside it.
#include <ATen/ATen.h>

#include <sstream>
#include <stdexcept>

#include "workbench/eval_tools.h"
#include "workbench/evaluator.h"
#include "workbench/plugin.h"

namespace {

class LinearProbe final : public wb::Evaluator {
 public:
  explicit LinearProbe(const wb::Params& p)
      : dataset_(p.text("dataset")),
        lrs_(p.reals("lrs")),
        epochs_(p.integer("epochs")),
        batch_(p.integer("batch")),
        val_fraction_(p.real("val_fraction")),
        split_seed_(static_cast<std::uint64_t>(p.integer("split_seed"))),
        augment_(p.boolean("augment")),
        batch_norm_(p.boolean("batch_norm")),
        crop_scale_min_(p.real("crop_scale_min")),
        views_(p.integers("views")) {}

  wb::EvalResult evaluate(wb::EvalContext& ctx) override {
    return wb::per_view(views_, [&](std::int64_t view) { return evaluate_view(ctx, view); });
  }

 private:
  wb::EvalResult evaluate_view(wb::EvalContext& ctx, std::int64_t view) {
    const wb::FeatureSet all = ctx.features(dataset_, wb::Split::Train, view);
    const wb::Draw split = wb::draw_fraction(all.labels, val_fraction_, split_seed_);
    const wb::FeatureSet train = wb::take(all, split.rest), val = wb::take(all, split.drawn);
    const auto classes = wb::count_classes({all.labels});

    wb::LinearHeadOptions options;
    options.lrs = lrs_;
    options.batch_norm = batch_norm_;
    options.seed = ctx.seed();
    options.device = ctx.device();
    wb::LinearHeads heads(all.features.size(1), classes, options);
    if (augment_)
      train_augmented(ctx, heads, split.rest, view);
    else
      wb::train_heads(heads, train, epochs_, batch_, ctx.seed());

    const std::vector<double> val_top1 = heads.accuracy(val);
    const std::int64_t best = wb::best_head(val_top1);
    const double lr = lrs_[static_cast<std::size_t>(best)];
    std::ostringstream log;
    const std::string name =
        view == 0 ? "linear_probe" : "linear_probe (view " + std::to_string(view) + ")";
    log << name << ": " << train.features.size(0) << " train / " << val.features.size(0)
        << " val images; val top-1 per lr:";
    for (std::size_t h = 0; h < lrs_.size(); ++h)
      log << " " << wb::format_number(lrs_[h]) << ": " << wb::format_number(val_top1[h]);
    log << "; chose lr " << wb::format_number(lr);
    const bool edge = wb::at_grid_edge(lrs_, best);
    if (edge) log << ", at the edge of the grid (the best rate may lie outside it: widen lrs)";
    ctx.info(log.str());

    heads.keep_only(best);  // the test split is read only now, and only by the chosen head
    const wb::FeatureSet test = ctx.features(dataset_, wb::Split::Test, view);
    wb::EvalResult r;
    r.scalars["top1"] = heads.accuracy(test, 1).at(0);
    r.scalars["top5"] = heads.accuracy(test, 5).at(0);
    r.scalars["val_top1"] = val_top1[static_cast<std::size_t>(best)];
    r.scalars["lr"] = lr;
    r.scalars["lr_at_edge"] = edge ? 1 : 0;
    r.arrays["lrs"] = at::tensor(lrs_, at::TensorOptions().dtype(at::kDouble));
    r.arrays["val_top1_per_lr"] = at::tensor(val_top1, at::TensorOptions().dtype(at::kDouble));
    ctx.info(name + ": test top-1 " + wb::format_number(r.scalars["top1"]) + " %");
    return r;
  }

  // Crop + flip views each epoch through the frozen backbone: one forward per batch, shared
  // by all heads.
  void train_augmented(wb::EvalContext& ctx, wb::LinearHeads& heads,
                       const std::vector<std::int64_t>& train_items, std::int64_t view) {
    auto data =
        wb::subset(ctx.dataset(dataset_, wb::Split::Train), train_items, "linear-probe train part");
    wb::ViewRecipe recipe = ctx.recipe("train");
    recipe.scale_min = crop_scale_min_;
    wb::LoaderOptions options = ctx.loader_options();
    options.batch_size = batch_;
    options.shuffle = true;
    options.drop_last = data->size() >= batch_;
    wb::Loader loader(data, {recipe}, options);
    heads.set_schedule(epochs_ * loader.batches_per_epoch());
    for (std::int64_t epoch = 0; epoch < epochs_; ++epoch) {
      loader.start_epoch(epoch);
      while (auto batch = loader.next()) {
        if (batch->size() < 2) continue;
        const wb::Batch b = batch->to(ctx.device());
        heads.step(wb::eval_forward_as(ctx.backbone(), b, view).cls, b.labels);
      }
    }
  }

  std::string dataset_;
  std::vector<double> lrs_;
  std::int64_t epochs_, batch_;
  double val_fraction_;
  std::uint64_t split_seed_;
  bool augment_, batch_norm_;
  double crop_scale_min_;
  std::vector<std::int64_t> views_;
};

}  // namespace

WORKBENCH_PLUGIN("linear probe evaluator") {
  registry.add_evaluator(
      "linear_probe",
      "linear classifiers on frozen CLS features, one per lr, chosen on a validation split of "
      "train, top-1 on test",
      {wb::ParamSpec::text("dataset", "", "data set name ('' = the run's own)"),
       wb::ParamSpec::reals("lrs", {0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0},
                            "learning rates: one head each, all trained at once; a choice at "
                            "either end is flagged (lr_at_edge)")
           .above(0),
       wb::ParamSpec::integer("epochs", 30, "passes over the training part").at_least(1),
       wb::ParamSpec::integer("batch", 256, "images per SGD step").at_least(2),
       wb::ParamSpec::real("val_fraction", 0.1,
                           "class-balanced share of train held out to choose the head")
           .range(0.001, 0.9),
       wb::ParamSpec::integer("split_seed", 0, "seed of the validation split").at_least(0),
       wb::ParamSpec::boolean("augment", true,
                              "true: crop + flip views each epoch (the protocol; a backbone "
                              "forward per image and epoch); false: the cached eval-view "
                              "features (far cheaper on a CPU)"),
       wb::ParamSpec::boolean("batch_norm", true,
                              "batch norm without affine before the heads (MoCo v3)"),
       wb::ParamSpec::real("crop_scale_min", 0.08, "augment: smallest crop area fraction")
           .range(0.01, 1),
       wb::ParamSpec::integers("views", {0},
                               "one evaluation per view index the forward passes claim (with "
                               "the sep-ViT's fixed gate: the expert path); results of view v > "
                               "0 are named <metric>_view<v>")
           .at_least(0)},
      [](const wb::Params& p) { return std::make_shared<LinearProbe>(p); });
  registry.add_check(wb::Kind::Evaluator, "linear_probe", wb::check_views);
}
