// Supervised classification: a linear head on the image feature, cross-entropy with optional
// label smoothing. Its head also serves the `accuracy` evaluator through Loss::predict.
#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include "workbench/loss.h"
#include "workbench/plugin.h"

namespace {

class Classify final : public wb::Loss {
 public:
  Classify(const wb::Params& p, const wb::LossContext& c)
      : weight_(p.real("weight")), smoothing_(p.real("label_smoothing")) {
    head_ = register_module("head", torch::nn::Linear(c.feature_dim, c.classes));
    // Zero init as in ViT's classifier: every class starts equally likely.
    torch::NoGradGuard no_grad;
    head_->weight.zero_();
    head_->bias.zero_();
  }

  wb::LossRequirements requirements() const override {
    wb::LossRequirements r;
    r.views = 1;
    r.labels = true;
    return r;
  }

  wb::LossResult compute(const wb::StepState& state) override {
    const at::Tensor logits = head_->forward(state.online.at(0).cls);
    const at::Tensor& labels = state.batch->labels;
    const auto classes = logits.size(1);
    const at::Tensor logp = at::log_softmax(logits, 1);
    // (1 - s) * one_hot + s / classes, as torch's label_smoothing does.
    const at::Tensor nll = -logp.gather(1, labels.unsqueeze(1)).squeeze(1);
    const at::Tensor uniform = -logp.mean(1);
    const at::Tensor loss = ((1 - smoothing_) * nll + smoothing_ * uniform).mean();
    wb::LossResult r;
    r.value = weight_ * loss;
    r.metrics["ce"] = loss;
    r.metrics["train_top1"] =
        logits.argmax(1).eq(labels).to(at::kFloat).mean() * (classes > 0 ? 1 : 0);
    return r;
  }

  bool classifies() const override { return true; }
  at::Tensor predict(const wb::BackboneOutput& features) override {
    return head_->forward(features.cls);
  }

 private:
  double weight_, smoothing_;
  torch::nn::Linear head_{nullptr};
};

}  // namespace

WORKBENCH_PLUGIN("supervised classification loss") {
  registry.add_loss(
      "classify", "linear head on the image feature, cross-entropy (supervised training)",
      {wb::ParamSpec::real("weight", 1.0, "multiplies the loss").at_least(0),
       wb::ParamSpec::real("label_smoothing", 0.0, "mass spread uniformly over classes")
           .range(0, 1)},
      [](const wb::Params& p, const wb::LossContext& c) {
        return std::make_shared<Classify>(p, c);
      });
}
