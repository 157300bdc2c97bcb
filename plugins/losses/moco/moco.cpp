// Loss "moco": MoCo v3 (Chen, Xie and He 2021; docs/methods.md §4). Projector and predictor heads
// on the CLS feature, a momentum projector (EMA of the projector, updated in momentum_update), and
// the symmetric contrastive loss ctr(q1, k2) + ctr(q2, k1) with keys gathered over all ranks.
// The temperature tau is train.temperature (LossContext::temperature); the momentum m of the
// projector's EMA comes from the trainer every step (train.momentum is its m0).
//
// Choices where the papers leave room:
// - Every Linear of both heads is bias-free (MoCo v3's _build_mlp); the last BN has no affine.
// - BatchNorm in the projector and predictor is synchronised over ranks (MoCo v3's SyncBN;
//   `sync_bn`, on by default): statistics of the global batch, as in one process. The momentum
//   projector's BN is synchronised too (MoCo v3 converts the whole model).
// - The momentum projector's own BN running statistics are left alone by the EMA (only the
//   parameters move, as in MoCo v3); both heads run in training mode so they are never used.
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "workbench/layers.h"
#include "workbench/loss.h"
#include "workbench/plugin.h"

namespace {

// ctr(q, k) = CE(norm(q) norm(k_all)^T / tau, own index offset by rank * B) * 2 tau, with k_all
// the keys of every rank in rank order (constants: they come from the momentum encoder).
// Also returns the top-1 accuracy of the positive among all keys, for the log (a tensor: read by
// the trainer once per logging interval). The logits are fp32 under bf16 autocast: the softmax
// over thousands of keys needs the precision (docs/methods.md §1).
std::pair<at::Tensor, at::Tensor> contrastive(const at::Tensor& q, const at::Tensor& k, double tau,
                                              wb::Communicator& comm) {
  const at::Tensor keys = comm.all_gather(wb::l2_normalize(k).detach());
  const at::Tensor logits = wb::at_least_fp32(wb::l2_normalize(q).mm(keys.t())) / tau;
  const std::int64_t B = q.size(0);
  const at::Tensor labels =
      at::arange(B, q.options().dtype(at::kLong)) + static_cast<std::int64_t>(comm.rank()) * B;
  const at::Tensor loss = at::cross_entropy_loss(logits, labels) * (2 * tau);
  const at::Tensor top1 = logits.detach().argmax(1).eq(labels).to(at::kFloat).mean();
  return {loss, top1};
}

// What the loss asks of the trainer: Loss::requirements() and, before any point runs, the
// check's declaration (ValidationReport::needs), from this one function.
wb::LossRequirements needs(const wb::Params& p) {
  wb::LossRequirements r;
  r.views = 2;
  r.momentum_encoder = true;
  r.freeze_patch_embedding = p.boolean("random_patch_projection");
  return r;
}

class Moco final : public wb::Loss {
 public:
  Moco(const wb::Params& p, const wb::LossContext& c)
      : tau_(c.temperature),
        weight_(p.real("weight")),
        needs_(needs(p)),
        sync_bn_(p.boolean("sync_bn")) {
    if (!(tau_ > 0))
      throw std::invalid_argument(
          "loss moco: the loss context has no temperature (train.temperature)");
    const auto hidden = p.integer("hidden"), out = p.integer("out");
    const auto pred_hidden = p.maybe_integer("pred_hidden").value_or(hidden);
    if (c.feature_dim <= 0)
      throw std::invalid_argument("loss moco: the backbone reports no feature width");
    projector_ =
        register_module("projector", std::make_shared<wb::MlpHead>(c.feature_dim, hidden, out, 3));
    predictor_ =
        register_module("predictor", std::make_shared<wb::MlpHead>(out, pred_hidden, out, 2));
    momentum_projector_ = register_module(
        "momentum_projector", std::make_shared<wb::MlpHead>(c.feature_dim, hidden, out, 3));
    // Starts as an exact copy of the projector and is never trained by the optimiser.
    at::NoGradGuard no_grad;
    auto online = projector_->named_parameters();
    for (auto& item : momentum_projector_->named_parameters()) {
      item.value().copy_(online[item.key()]);
      item.value().set_requires_grad(false);
    }
  }

  wb::LossRequirements requirements() const override { return needs_; }

  wb::LossResult compute(const wb::StepState& state) override {
    if (state.online.size() < 2 || state.momentum.size() < 2)
      throw std::logic_error("loss moco: needs two views through the online and momentum encoders");
    wb::Communicator& comm = *state.comm;
    wb::Communicator* sync = sync_bn_ ? &comm : nullptr;
    const at::Tensor q1 = predictor_->forward(projector_->forward(state.online[0].cls, sync), sync);
    const at::Tensor q2 = predictor_->forward(projector_->forward(state.online[1].cls, sync), sync);
    at::Tensor k1, k2;
    {
      at::NoGradGuard no_grad;
      k1 = momentum_projector_->forward(state.momentum[0].cls, sync);
      k2 = momentum_projector_->forward(state.momentum[1].cls, sync);
    }
    auto [l12, acc12] = contrastive(q1, k2, tau_, comm);
    auto [l21, acc21] = contrastive(q2, k1, tau_, comm);
    const at::Tensor loss = l12 + l21;
    wb::LossResult r;
    r.value = weight_ * loss;
    r.metrics["ctr"] = loss;
    r.metrics["top1"] = 0.5 * (acc12 + acc21);
    return r;
  }

  void momentum_update(double m) override {
    at::NoGradGuard no_grad;
    auto online = projector_->named_parameters();
    for (auto& item : momentum_projector_->named_parameters())
      item.value().mul_(m).add_(online[item.key()], 1.0 - m);
  }

  std::int64_t finetune_dim() const override { return projector_->first_width(); }
  at::Tensor finetune_forward(const at::Tensor& cls) override {
    return projector_->first_layer(cls);
  }
  std::vector<at::Tensor> finetune_parameters() override {
    return projector_->first_layer_parameters();
  }

 private:
  double tau_, weight_;
  wb::LossRequirements needs_;
  bool sync_bn_;
  std::shared_ptr<wb::MlpHead> projector_, predictor_, momentum_projector_;
};

}  // namespace

WORKBENCH_PLUGIN("loss moco: MoCo v3 contrastive learning") {
  using wb::ParamSpec;
  registry.add_loss(
      "moco",
      "MoCo v3: projector + predictor on the CLS feature, momentum projector, symmetric "
      "contrastive loss ctr(q1, k2) + ctr(q2, k1) with keys gathered over ranks",
      {
          ParamSpec::integer("hidden", 512, "hidden width of the projector (paper, ViT-S: 4096)")
              .at_least(1),
          ParamSpec::integer("out", 128, "output width of projector and predictor (paper: 256)")
              .at_least(1),
          ParamSpec::optional("pred_hidden", wb::ParamType::Int,
                              "hidden width of the predictor; unset = hidden (paper: 4096)")
              .at_least(1),
          ParamSpec::moved("tau", "train.temperature",
                           "one temperature for every contrastive term, MoCo's and OGAR's"),
          ParamSpec::moved("momentum", "train.momentum",
                           "the trainer owns the momentum encoder and its schedule"),
          ParamSpec::boolean("sync_bn", true,
                             "batch norm of the heads over all ranks' images (MoCo v3's "
                             "SyncBatchNorm); no effect in one process"),
          ParamSpec::boolean("random_patch_projection", true,
                             "freeze the patch embedding at its random initialisation"),
          ParamSpec::real("weight", 1.0, "multiplies the loss").at_least(0),
      },
      [](const wb::Params& p, const wb::LossContext& c) { return std::make_shared<Moco>(p, c); });
  registry.add_check(wb::Kind::Loss, "moco",
                     [](const wb::Params& p, const wb::ValidationContext&,
                        wb::ValidationReport& r) { r.needs = needs(p); });
}
