// Semi-supervised evaluation (docs/methods.md §7): a class-balanced fraction of the training labels
// (seeded). 1 %: linear heads on frozen features; 10 %: fine-tuning of the backbone together
// with the first layer of the projection head (Loss::finetune_*) and a new linear head.
// Hyper-parameters (the lr) are chosen on a class-balanced validation split drawn from the
// training images *outside* the labelled subset; the test split is read once, by the choice.
// Fine-tuning trains the path it evaluates: every forward pass claims the evaluated view and the
// gates route as in evaluation (no gate noise; a fixed gate's eval path), while the modules are
// in training mode (stochastic depth, batch norm of the head). The loop is the SDK's
// (wb::finetune, shared with the `finetune` evaluator) with route_as_training = false.
#include <ATen/ATen.h>

#include <memory>
#include <sstream>
#include <stdexcept>

#include "workbench/eval_tools.h"
#include "workbench/evaluator.h"
#include "workbench/plugin.h"

namespace {

at::Tensor as_tensor(const std::vector<double>& v) {
  return at::tensor(v, at::TensorOptions().dtype(at::kDouble));
}
at::Tensor as_tensor(const std::vector<std::int64_t>& v) {
  return at::tensor(v, at::TensorOptions().dtype(at::kLong)).to(at::kDouble);
}

class SemiSupervised final : public wb::Evaluator {
 public:
  explicit SemiSupervised(const wb::Params& p)
      : dataset_(p.text("dataset")),
        fraction_(p.real("fraction")),
        label_seed_(static_cast<std::uint64_t>(p.integer("label_seed"))),
        val_fraction_(p.real("val_fraction")),
        lrs_(p.reals("lrs")),
        epochs_(p.integer("epochs")),
        batch_(p.integer("batch")),
        batch_norm_(p.boolean("batch_norm")),
        finetune_lrs_(p.reals("finetune_lrs")),
        finetune_epochs_(p.integer("finetune_epochs")),
        optimizer_(p.text("optimizer")),
        weight_decay_(p.real("weight_decay")),
        crop_scale_min_(p.real("crop_scale_min")),
        views_(p.integers("views")) {
    const std::string mode = p.text("mode");
    finetune_ = mode == "finetune" || (mode == "auto" && fraction_ >= 0.1 - 1e-9);
  }

  wb::EvalResult evaluate(wb::EvalContext& ctx) override {
    return wb::per_view(views_, [&](std::int64_t view) { return evaluate_view(ctx, view); });
  }

 private:
  wb::EvalResult evaluate_view(wb::EvalContext& ctx, std::int64_t view) {
    view_ = view;
    auto train_data = ctx.dataset(dataset_, wb::Split::Train);
    const at::Tensor labels = wb::labels_of(*train_data);
    const wb::Draw labelled = wb::draw_fraction(labels, fraction_, label_seed_);
    const wb::Draw val = wb::draw_fraction(labels, labelled.rest, val_fraction_, label_seed_ + 1);
    const auto classes = wb::count_classes({labels});
    std::ostringstream log;
    log << "semi_supervised" << (view_ ? " (view " + std::to_string(view_) + ")" : "") << ": "
        << labelled.drawn.size() << " labelled images (" << fraction_ * 100 << " %), "
        << val.drawn.size() << " validation images from the rest, "
        << (finetune_ ? "fine-tuning" : "linear heads");
    ctx.info(log.str());

    wb::EvalResult r = finetune_ ? finetune(ctx, train_data, labelled.drawn, val.drawn, classes)
                                 : linear(ctx, labelled.drawn, val.drawn, classes);
    r.scalars["labelled"] = static_cast<double>(labelled.drawn.size());
    r.scalars["finetune"] = finetune_ ? 1 : 0;
    const at::Tensor idx = at::tensor(labelled.drawn, at::TensorOptions().dtype(at::kLong));
    r.arrays["labelled_per_class"] =
        as_tensor(wb::class_counts(labels.index_select(0, idx), classes));
    ctx.info("semi_supervised: test top-1 " + wb::format_number(r.scalars["top1"]) + " %");
    return r;
  }

  wb::EvalResult linear(wb::EvalContext& ctx, const std::vector<std::int64_t>& labelled,
                        const std::vector<std::int64_t>& val_items, std::int64_t classes) {
    const wb::FeatureSet all = ctx.features(dataset_, wb::Split::Train, view_);
    const wb::FeatureSet train = wb::take(all, labelled), val = wb::take(all, val_items);
    wb::LinearHeadOptions options;
    options.lrs = lrs_;
    options.batch_norm = batch_norm_;
    options.seed = ctx.seed();
    options.device = ctx.device();
    wb::LinearHeads heads(all.features.size(1), classes, options);
    wb::train_heads(heads, train, epochs_, batch_, ctx.seed());
    const std::vector<double> val_top1 = heads.accuracy(val);
    const std::int64_t best = wb::best_head(val_top1);
    std::ostringstream log;
    log << "semi_supervised: val top-1 per lr:";
    for (std::size_t h = 0; h < lrs_.size(); ++h)
      log << " " << wb::format_number(lrs_[h]) << ": " << wb::format_number(val_top1[h]);
    log << "; chose lr " << wb::format_number(lrs_[static_cast<std::size_t>(best)]);
    const bool edge = wb::at_grid_edge(lrs_, best);
    if (edge) log << ", at the edge of the grid (the best rate may lie outside it: widen lrs)";
    ctx.info(log.str());
    heads.keep_only(best);
    const wb::FeatureSet test = ctx.features(dataset_, wb::Split::Test, view_);
    wb::EvalResult r;
    r.scalars["lr_at_edge"] = edge ? 1 : 0;
    r.scalars["top1"] = heads.accuracy(test, 1).at(0);
    r.scalars["top5"] = heads.accuracy(test, 5).at(0);
    r.scalars["val_top1"] = val_top1[static_cast<std::size_t>(best)];
    r.scalars["lr"] = lrs_[static_cast<std::size_t>(best)];
    r.arrays["lrs"] = as_tensor(lrs_);
    r.arrays["val_top1_per_lr"] = as_tensor(val_top1);
    return r;
  }

  wb::EvalResult finetune(wb::EvalContext& ctx, std::shared_ptr<const wb::Dataset> train_data,
                          const std::vector<std::int64_t>& labelled,
                          const std::vector<std::int64_t>& val_items, std::int64_t classes) {
    auto train = wb::subset(train_data, labelled, "labelled subset");
    auto val = wb::subset(train_data, val_items, "validation");
    std::unique_ptr<wb::FinetuneModel> best;
    double best_val = -1, best_lr = 0;
    std::int64_t best_index = 0;
    std::vector<double> val_top1;
    for (double lr : finetune_lrs_) {
      auto tuned = finetune_one(ctx, train, classes, lr);
      val_top1.push_back(wb::finetuned_accuracy(ctx, *tuned, val, view_).first);
      ctx.info("semi_supervised: fine-tuned with lr " + wb::format_number(lr) + ": val top-1 " +
               wb::format_number(val_top1.back()) + " %");
      if (val_top1.back() > best_val) {
        best_val = val_top1.back();
        best_lr = lr;
        best_index = static_cast<std::int64_t>(val_top1.size()) - 1;
        best = std::move(tuned);
      }
    }
    const bool edge = wb::at_grid_edge(finetune_lrs_, best_index);
    if (edge)
      ctx.info("semi_supervised: the chosen fine-tuning lr " + wb::format_number(best_lr) +
               " is at the edge of the grid (the best rate may lie outside it: widen "
               "finetune_lrs)");
    const auto [top1, top5] =
        wb::finetuned_accuracy(ctx, *best, ctx.dataset(dataset_, wb::Split::Test), view_);
    wb::EvalResult r;
    r.scalars["lr_at_edge"] = edge ? 1 : 0;
    r.scalars["top1"] = top1;
    r.scalars["top5"] = top5;
    r.scalars["val_top1"] = best_val;
    r.scalars["lr"] = best_lr;
    r.arrays["lrs"] = as_tensor(finetune_lrs_);
    r.arrays["val_top1_per_lr"] = as_tensor(val_top1);
    return r;
  }

  // One fine-tuning of the backbone, the first loss head that has one and a new linear layer:
  // finetune_epochs passes over the labelled subset on the evaluated path.
  std::unique_ptr<wb::FinetuneModel> finetune_one(wb::EvalContext& ctx,
                                                  std::shared_ptr<const wb::Dataset> train,
                                                  std::int64_t classes, double lr) {
    auto tuned =
        std::make_unique<wb::FinetuneModel>(ctx.trainable_copy(), classes, true, ctx.device());
    if (!tuned->head)
      ctx.info(
          "semi_supervised: no loss provides a fine-tuning head (finetune_dim); "
          "fine-tuning the backbone with a linear head on the CLS feature");
    wb::FinetuneOptions options;
    options.lr = lr;
    options.sgd = optimizer_ == "sgd";
    options.momentum = 0.9;
    options.weight_decay = weight_decay_;
    options.epochs = finetune_epochs_;
    options.recipe = ctx.recipe("train");
    options.recipe.scale_min = crop_scale_min_;
    options.loader = ctx.loader_options();
    options.loader.batch_size = batch_;
    options.view = view_;
    options.route_as_training = false;
    wb::finetune(*tuned, std::move(train), options, ctx.device());
    return tuned;
  }

  std::string dataset_;
  double fraction_;
  std::uint64_t label_seed_;
  double val_fraction_;
  std::vector<double> lrs_;
  std::int64_t epochs_, batch_;
  bool batch_norm_;
  std::vector<double> finetune_lrs_;
  std::int64_t finetune_epochs_;
  std::string optimizer_;
  double weight_decay_, crop_scale_min_;
  std::vector<std::int64_t> views_;
  std::int64_t view_ = 0;  // the view being evaluated
  bool finetune_ = false;
};

}  // namespace

WORKBENCH_PLUGIN("semi-supervised evaluator") {
  registry.add_evaluator(
      "semi_supervised",
      "class-balanced label fraction: linear heads on frozen features (1 %) or fine-tuning "
      "from the projection head's first layer (10 %); lr chosen on a validation split of the "
      "unlabelled rest of train; top-1 on test",
      {wb::ParamSpec::real("fraction", 0.01, "share of the training labels used, per class")
           .range(0.0001, 1),
       wb::ParamSpec::text("mode", "auto",
                           "linear | finetune | auto (finetune from 10 % of the labels)")
           .one_of({"auto", "linear", "finetune"}),
       wb::ParamSpec::text("dataset", "", "data set name ('' = the run's own)"),
       wb::ParamSpec::integer("label_seed", 0, "seed of the labelled subset").at_least(0),
       wb::ParamSpec::real("val_fraction", 0.05,
                           "class-balanced share of the unlabelled training images used to "
                           "choose the lr")
           .range(0.001, 0.9),
       wb::ParamSpec::reals("lrs", {0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0},
                            "linear: learning rates (one head each); a choice at either end is "
                            "flagged (lr_at_edge)")
           .above(0),
       wb::ParamSpec::integer("epochs", 100, "linear: passes over the labelled subset").at_least(1),
       wb::ParamSpec::integer("batch", 128, "images per step").at_least(2),
       wb::ParamSpec::boolean("batch_norm", true, "linear: batch norm without affine first"),
       wb::ParamSpec::reals("finetune_lrs", {1e-4, 1e-3}, "finetune: learning rates tried")
           .above(0),
       wb::ParamSpec::integer("finetune_epochs", 5, "finetune: passes over the labelled subset")
           .at_least(1),
       wb::ParamSpec::text("optimizer", "adamw", "finetune: adamw | sgd (momentum 0.9)")
           .one_of({"adamw", "sgd"}),
       wb::ParamSpec::real("weight_decay", 0.05, "finetune: weight decay").at_least(0),
       wb::ParamSpec::real("crop_scale_min", 0.08, "finetune: smallest crop area fraction")
           .range(0.01, 1),
       wb::ParamSpec::integers("views", {0},
                               "one evaluation per view index the forward passes claim (with "
                               "the sep-ViT's fixed gate: the expert path, also the one "
                               "fine-tuned); results of view v > "
                               "0 are named <metric>_view<v>")
           .at_least(0)},
      [](const wb::Params& p) { return std::make_shared<SemiSupervised>(p); });
  registry.add_check(wb::Kind::Evaluator, "semi_supervised", wb::check_views);
}
