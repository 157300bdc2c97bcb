// Top-1 / top-5 accuracy of the model's own classifier (a loss that implements predict(), such
// as `classify`) on a split of a data set, with the backbone in eval mode.
#include <ATen/ATen.h>

#include <stdexcept>

#include "workbench/evaluator.h"
#include "workbench/format.h"
#include "workbench/plugin.h"

namespace {

class Accuracy final : public wb::Evaluator {
 public:
  explicit Accuracy(const wb::Params& p)
      : dataset_(p.text("dataset")), split_(wb::split_named(p.text("split"))) {}

  wb::EvalResult evaluate(wb::EvalContext& ctx) override {
    wb::Loss* classifier = nullptr;
    for (wb::Loss* loss : ctx.losses())
      if (loss->classifies()) {
        classifier = loss;
        break;
      }
    if (!classifier)
      throw std::runtime_error(
          "accuracy needs a loss with a classifier head (e.g. classify); use linear_probe or knn "
          "for self-supervised runs");
    auto data = ctx.dataset(dataset_, split_);
    wb::LoaderOptions options = ctx.loader_options();
    options.shuffle = false;
    options.drop_last = false;
    wb::Loader loader(data, {ctx.recipe("eval")}, options);
    loader.start_epoch(0);
    torch::NoGradGuard no_grad;
    ctx.backbone().eval();
    std::int64_t n = 0, top1 = 0, top5 = 0;
    while (auto batch = loader.next()) {
      wb::Batch b = batch->to(ctx.device());
      wb::RoutingContext rc;
      rc.training = false;
      rc.view = at::zeros({b.size()}, at::TensorOptions().dtype(at::kLong).device(ctx.device()));
      rc.cluster = b.cluster;  // MoCE: the images' clusters route a cluster gate
      const at::Tensor logits = classifier->predict(ctx.backbone().forward(b.views[0], rc));
      const at::Tensor labels = b.labels.unsqueeze(1);
      const auto k = std::min<std::int64_t>(5, logits.size(1));
      const at::Tensor topk = std::get<1>(logits.topk(k, 1));
      top1 += topk.narrow(1, 0, 1).eq(labels).sum().item<std::int64_t>();
      top5 += topk.eq(labels).any(1).sum().item<std::int64_t>();
      n += b.size();
    }
    wb::EvalResult r;
    r.scalars["top1"] = 100.0 * top1 / std::max<std::int64_t>(1, n);
    r.scalars["top5"] = 100.0 * top5 / std::max<std::int64_t>(1, n);
    ctx.info("accuracy on " + data->describe() + ": top-1 " + wb::format_number(r.scalars["top1"]) +
             " % of " + std::to_string(n) + " images");
    return r;
  }

 private:
  std::string dataset_;
  wb::Split split_;
};

}  // namespace

WORKBENCH_PLUGIN("accuracy of the model's classifier") {
  registry.add_evaluator(
      "accuracy", "top-1 / top-5 accuracy of the classifier trained with the model (classify loss)",
      {wb::ParamSpec::text("dataset", "", "data set name ('' = the run's own)"),
       wb::ParamSpec::text("split", "test", "split evaluated").one_of({"train", "val", "test"})},
      [](const wb::Params& p) { return std::make_shared<Accuracy>(p); });
}
