// Loss "mae": masked autoencoding (He et al. 2022; docs/methods.md §8), the pre-training
// objective of MoCE and its baselines. The trainer hides mask_ratio of every image's patches
// (requirements().mask_ratio; the backbone encodes only the visible ones); this loss owns the
// light decoder, as MoCo's loss owns its heads:
//   decoder_embed Linear(D -> Dd) on the encoded tokens (CLS included); a learned mask token at
//   every masked position; the decoder's own fixed 2-D sin-cos positions in MAE's layout (zero
//   for CLS); decoder_depth dense pre-norm blocks of workbench/layers.h; decoder_norm;
//   decoder_pred Linear(Dd -> p * p * C); the CLS output is dropped.
// Loss: mean over masked patches of the per-patch mean squared error between the prediction and
// the target, the patch's pixels (MAE's patchify layout) of the normalised view the backbone saw,
// each patch normalised by its own mean and variance when norm_pix_loss is on (MAE's reference
// setting: (x - mean) / sqrt(var + 1e-6), var unbiased).
//
// Choices where the papers leave room (docs/moce.md):
// - Pixels are those of the normalised view (MAE feeds the normalised image and patchifies the
//   same tensor); with norm_pix_loss the data set's normalisation does not change the target.
// - The decoder blocks are layers.h's (MoCo v3's initialisation: q, k and v as three Xavier
//   matrices); MAE initialises qkv as one matrix. The mask token is N(0, 0.02²), as MAE's.
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "workbench/layers.h"
#include "workbench/loss.h"
#include "workbench/masking.h"
#include "workbench/plugin.h"

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::invalid_argument("loss mae: " + what);
}

// What the loss asks of the trainer: Loss::requirements() and, before any point runs, the
// check's declaration (ValidationReport::needs), from this one function.
wb::LossRequirements needs(const wb::Params& p) {
  wb::LossRequirements r;
  r.views = 1;
  r.mask_ratio = p.real("mask_ratio");
  return r;
}

// The decoder's shape and the mask against the patch grid, checked before any point runs
// (Registry::add_check; the grid is 0 there when the image size is not known) and again by the
// constructor.
void check(const wb::Params& p, const wb::ValidationContext& c, wb::ValidationReport& r) {
  r.needs = needs(p);
  const auto dim = p.integer("decoder_dim"), heads = p.integer("decoder_heads");
  if (dim % heads != 0)
    r.error("decoder_heads", "decoder_dim = " + std::to_string(dim) +
                                 " is not a multiple of decoder_heads = " + std::to_string(heads));
  if (dim % 4 != 0)
    r.error("decoder_dim", "decoder_dim = " + std::to_string(dim) +
                               " must be a multiple of 4 (sin-cos positions)");
  if (c.patch_grid > 0) {
    try {
      wb::visible_count(c.patch_grid * c.patch_grid, p.real("mask_ratio"));
    } catch (const std::invalid_argument& e) {
      r.error("mask_ratio", e.what());
    }
  }
}

class Mae final : public wb::Loss {
 public:
  Mae(const wb::Params& p, const wb::LossContext& c)
      : needs_(needs(p)),
        norm_pix_(p.boolean("norm_pix_loss")),
        weight_(p.real("weight")),
        grid_(c.patch_grid),
        channels_(c.channels) {
    const auto dim = p.integer("decoder_dim"), depth = p.integer("decoder_depth"),
               heads = p.integer("decoder_heads");
    if (c.feature_dim <= 0 || grid_ <= 0 || channels_ <= 0 || c.image_size % grid_ != 0)
      fail("the loss context has no feature width, patch grid or image shape");
    patch_ = c.image_size / grid_;
    wb::ValidationContext shapes;
    shapes.patch_grid = grid_;
    wb::ValidationReport report;
    check(p, shapes, report);
    if (!report.ok()) fail(report.errors.front().message);
    embed_ = register_module("decoder_embed", wb::xavier_linear(c.feature_dim, dim));
    mask_token_ = register_parameter("mask_token", at::randn({1, 1, dim}) * 0.02);
    positions_ = register_buffer("decoder_pos_embed",
                                 wb::sincos_positions(grid_, dim, wb::SinCosLayout::Mae, true));
    const auto hidden = static_cast<std::int64_t>(p.real("decoder_mlp_ratio") * double(dim));
    for (std::int64_t i = 0; i < depth; ++i)
      blocks_.push_back(register_module("decoder_block" + std::to_string(i),
                                        std::make_shared<wb::Block>(dim, heads, hidden, 0.0)));
    norm_ = register_module("decoder_norm", wb::layer_norm(dim));
    pred_ = register_module("decoder_pred", wb::xavier_linear(dim, patch_ * patch_ * channels_));
  }

  wb::LossRequirements requirements() const override { return needs_; }

  wb::LossResult compute(const wb::StepState& state) override {
    if (state.online.empty() || !state.batch || state.batch->views.empty())
      throw std::logic_error("loss mae: no online output or no batch");
    const wb::BackboneOutput& out = state.online.front();
    if (!out.keep.defined())
      throw std::logic_error("loss mae: the step has no mask (BackboneOutput::keep)");
    const at::Tensor pred = decode(out);
    const at::Tensor target = targets(state.batch->views.front());
    const at::Tensor loss = masked_mse(pred, target, wb::masked_patches(out.keep, grid_ * grid_));
    wb::LossResult r;
    r.value = weight_ * loss;
    r.metrics["reconstruction"] = loss.item<double>();
    return r;
  }

  bool reconstructs() const override { return true; }

  at::Tensor reconstruct(const at::Tensor& images, const wb::BackboneOutput& features) override {
    if (!features.keep.defined()) fail("reconstruct needs features computed under a mask");
    at::Tensor pred = decode(features);
    if (norm_pix_) {
      // The prediction lives in per-patch normalised units: map it back with each patch's own
      // statistics (what a picture of a norm_pix model can show is the structure of a patch).
      const at::Tensor pixels = wb::patchify(images, patch_);
      const at::Tensor mean = pixels.mean({-1}, true), var = pixels.var({-1}, true, true);
      pred = pred * (var + 1e-6).sqrt() + mean;
    }
    return wb::unpatchify(pred, patch_, channels_);
  }

  // The decoder on encoded tokens [B, 1 + K, D] with keep [B, K]: predictions [B, N, p*p*C].
  at::Tensor decode(const wb::BackboneOutput& out) {
    const at::Tensor tokens = at::cat({out.cls.unsqueeze(1), out.patches}, 1);
    const at::Tensor x = embed_->forward(tokens);  // [B, 1 + K, Dd]
    const auto B = x.size(0), N = grid_ * grid_, Dd = x.size(2);
    const at::Tensor index = out.keep.unsqueeze(-1).expand({-1, -1, Dd});
    at::Tensor full =
        mask_token_.expand({B, N, Dd}).scatter(1, index, x.narrow(1, 1, x.size(1) - 1));
    at::Tensor y = at::cat({x.narrow(1, 0, 1), full}, 1) + positions_;
    wb::RoutingContext context;  // the decoder is dense: nothing is routed
    std::vector<wb::Routing> none;
    for (auto& block : blocks_) y = block->forward(y, context, none);
    y = pred_->forward(norm_->forward(y));
    return y.narrow(1, 1, N);
  }

  // Per-patch pixel targets [B, N, p*p*C] of images [B, C, H, W].
  at::Tensor targets(const at::Tensor& images) const {
    at::Tensor t = wb::patchify(images, patch_);
    if (norm_pix_) {
      const at::Tensor mean = t.mean({-1}, true), var = t.var({-1}, true, true);
      t = (t - mean) / (var + 1e-6).sqrt();
    }
    return t;
  }

  // Mean over masked patches (mask [B, N] bool) of each patch's mean squared error.
  static at::Tensor masked_mse(const at::Tensor& pred, const at::Tensor& target,
                               const at::Tensor& mask) {
    const at::Tensor per_patch = (pred - target).pow(2).mean({-1});
    const at::Tensor m = mask.to(per_patch.scalar_type());
    return (per_patch * m).sum() / m.sum();
  }

 private:
  wb::LossRequirements needs_;
  bool norm_pix_;
  double weight_;
  std::int64_t grid_, channels_, patch_ = 0;
  torch::nn::Linear embed_{nullptr}, pred_{nullptr};
  at::Tensor mask_token_, positions_;
  std::vector<std::shared_ptr<wb::Block>> blocks_;
  torch::nn::LayerNorm norm_{nullptr};
};

}  // namespace

WORKBENCH_PLUGIN("loss mae: masked autoencoder (MAE) reconstruction") {
  using wb::ParamSpec;
  registry.add_loss(
      "mae",
      "MAE: the backbone encodes the visible patches, a light decoder with mask tokens and its "
      "own sin-cos positions predicts every patch's pixels; MSE on the masked patches",
      {
          ParamSpec::real("mask_ratio", 0.75, "fraction of each image's patches hidden (MAE: 0.75)")
              .range(0, 0.99),
          ParamSpec::integer("decoder_dim", 128, "decoder width (MAE ViT-B: 512)").at_least(4),
          ParamSpec::integer("decoder_depth", 2, "decoder blocks (MAE ViT-B: 8)").at_least(0),
          ParamSpec::integer("decoder_heads", 4, "decoder attention heads (MAE ViT-B: 16)")
              .at_least(1),
          ParamSpec::real("decoder_mlp_ratio", 4.0, "decoder MLP width / decoder_dim").above(0),
          ParamSpec::boolean("norm_pix_loss", true,
                             "targets = each patch's pixels normalised by the patch's mean and "
                             "variance (MAE's reference setting)"),
          ParamSpec::real("weight", 1.0, "multiplies the loss").at_least(0),
      },
      [](const wb::Params& p, const wb::LossContext& c) { return std::make_shared<Mae>(p, c); });
  registry.add_check(wb::Kind::Loss, "mae", check);
}
