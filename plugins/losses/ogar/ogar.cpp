// Loss "ogar": Overlapping-based Gate Aligning Regularization (CR-MoE §3.2, eq. 6-10;
// docs/methods.md §5). Per MoE layer, the L2-normalised gate vectors of the online encoder
// (queries) are pulled towards those of the momentum encoder (keys, constants) for the same image
// and pushed away from other images':
//
//   L_CLS   = ctr(g_cls(view a), g_cls(view b)) over the images of the global batch
//   L_patch = CE over images j of <q_{i,m}, k_{j, match_j(m)}> / tau (positive j = i) summed over
//             valid (i, m), divided by all B N_p patches (eq. 7-8: an invalid patch counts 0;
//             patch_mean = "all") or by the valid pairs ("valid" = the "all" value / valid
//             fraction)
//   L_G     = sum over MoE layers of (1 - alpha) L_CLS + alpha L_patch;   value = weight * L_G
//
// The gate vector of a token is, by gate_vector: the paper's G(x) (softmax probabilities at the
// top-k experts, 0 elsewhere; the default), the full softmax, or the gate's logits of all
// experts (what the public reference code normalises). tau is train.temperature
// (LossContext::temperature), the same as MoCo's as the paper says. Each InfoNCE is multiplied
// by 2 tau (as MoCo v3's ctr). "Symmetric over the two views" is the
// sum of both directions (queries from view 1 with keys from view 2, and the reverse), as MoCo v3
// sums ctr(q1, k2) + ctr(q2, k1); the patch mean is taken per direction. negatives = false
// replaces every InfoNCE by the negative cosine similarity of the positive pairs alone
// (BYOL-style; Table 6's "no negatives", which collapses the routing).
//
// The matcher (a plugin) pairs the patches: one that is not per_layer() is called once per
// direction and step, and its match serves every layer; a per_layer() one is called per layer
// with that layer's input tokens and gate vectors. Keys and negatives are gathered over ranks;
// the patch mean is over this rank's patches (or valid pairs).
#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "workbench/layers.h"
#include "workbench/loss.h"
#include "workbench/plugin.h"

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::invalid_argument("loss ogar: " + what);
}

// What the loss asks of the trainer: Loss::requirements() and, before any point runs, the
// check's declaration (ValidationReport::needs), from this one function.
wb::LossRequirements needs() {
  wb::LossRequirements r;
  r.views = 2;
  r.momentum_encoder = true;
  return r;
}

// One direction's terms in one layer: unweighted, before the 2 tau scaling is applied by caller.
struct Terms {
  at::Tensor cls, patch;
  at::Tensor valid;  // valid pairs, a device scalar: read by the trainer once per log interval
  double pairs = 0;
};

class Ogar final : public wb::Loss {
 public:
  Ogar(const wb::Params& p, const wb::LossContext& c)
      : weight_(p.real("weight")),
        alpha_(p.real("alpha")),
        tau_(c.temperature),
        vector_(p.text("gate_vector")),
        mean_all_(p.text("patch_mean") == "all"),
        negatives_(p.boolean("negatives")),
        log_layers_(p.boolean("log_layers")),
        grid_(c.patch_grid) {
    if (!(tau_ > 0)) fail("the loss context has no temperature (train.temperature)");
    if (!c.make_matcher) fail("the loss context has no matcher factory");
    matcher_ = c.make_matcher(p.plugin("matcher"));
    if (!matcher_) fail("the matcher factory returned nothing");
  }

  wb::LossRequirements requirements() const override { return needs(); }

  wb::LossResult compute(const wb::StepState& state) override {
    if (state.online.size() < 2 || state.momentum.size() < 2)
      fail("needs two views through the online and the momentum encoder");
    if (!state.comm) fail("the step state has no communicator");
    const std::size_t layers = state.online[0].routings.size();
    for (int v = 0; v < 2; ++v)
      if (state.online[v].routings.size() != layers || state.momentum[v].routings.size() != layers)
        fail("the views or encoders report different numbers of MoE layers");

    wb::LossResult r;
    at::Tensor total = at::zeros({}, state.online[0].cls.options());
    if (layers == 0) {  // a dense backbone: nothing to align, an exact 0 to add
      r.value = weight_ * total;
      r.metrics = {{"cls", 0.0}, {"patch", 0.0}, {"valid_fraction", 0.0}};
      return r;
    }

    // Matches that depend on geometry only: once per direction, shared by all layers.
    std::vector<wb::Match> shared(2);
    if (!matcher_->per_layer())
      for (int a = 0; a < 2; ++a) shared[a] = matcher_->match(input(state, 0, a, 1 - a));

    at::Tensor cls_sum = at::zeros({}, total.options().dtype(at::kFloat)), patch_sum = cls_sum,
               valid = cls_sum;
    double pairs = 0;
    for (std::size_t l = 0; l < layers; ++l) {
      at::Tensor cls, patch;
      for (int a = 0; a < 2; ++a) {
        const wb::Match match =
            matcher_->per_layer()
                ? matcher_->match(input(state, static_cast<std::int64_t>(l), a, 1 - a))
                : shared[a];
        Terms t = direction(state, l, a, 1 - a, match);
        cls = cls.defined() ? cls + t.cls : t.cls;
        patch = patch.defined() ? patch + t.patch : t.patch;
        valid = valid + t.valid;
        pairs += t.pairs;
      }
      total = total + (1 - alpha_) * cls + alpha_ * patch;
      cls_sum = cls_sum + cls.detach();
      patch_sum = patch_sum + patch.detach();
      if (log_layers_) {
        r.metrics["cls_moe" + std::to_string(l)] = cls;
        r.metrics["patch_moe" + std::to_string(l)] = patch;
      }
    }
    r.value = weight_ * total;
    r.metrics["cls"] = cls_sum;
    r.metrics["patch"] = patch_sum;
    r.metrics["valid_fraction"] = pairs > 0 ? wb::Metric(valid / pairs) : wb::Metric(0.0);
    return r;
  }

 private:
  const at::Tensor& gate_vectors(const wb::Routing& routing) const {
    const at::Tensor& g = vector_ == "dense"    ? routing.probs
                          : vector_ == "logits" ? routing.logits
                                                : routing.gates;
    if (!g.defined() || g.dim() != 2)
      fail("a MoE layer's routing has no " +
           std::string(vector_ == "dense"    ? "probs"
                       : vector_ == "logits" ? "logits (this gate does not report them)"
                                             : "gates") +
           " [T, E] (gate_vector = " + vector_ + ")");
    return g;
  }

  // Tokens per image of a layer: from the routing, else from the batch and the token count.
  static std::int64_t tokens_per_image(const wb::Routing& routing, std::int64_t batch,
                                       std::int64_t tokens) {
    if (routing.tokens_per_image > 0) return routing.tokens_per_image;
    if (batch <= 0 || tokens % batch != 0) fail("cannot split the layer's tokens into images");
    return tokens / batch;
  }

  // [T, X] -> [B, tokens per image, X].
  static at::Tensor per_image(const at::Tensor& x, std::int64_t batch, std::int64_t tpi) {
    if (x.size(0) != batch * tpi)
      fail("a layer has " + std::to_string(x.size(0)) + " tokens, expected " +
           std::to_string(batch) + " images x " + std::to_string(tpi));
    return x.reshape({batch, tpi, x.size(1)});
  }

  std::int64_t grid_of(std::int64_t patches) const {
    if (grid_ > 0 && grid_ * grid_ == patches) return grid_;
    const auto g = static_cast<std::int64_t>(std::llround(std::sqrt(static_cast<double>(patches))));
    if (g * g != patches)
      fail(std::to_string(patches) + " patch tokens per image do not form a square grid");
    return g;
  }

  // What the matcher sees for queries from view a (online) and keys from view b (momentum).
  wb::MatchInput input(const wb::StepState& s, std::int64_t layer, int a, int b) const {
    const wb::Routing& qr = s.online[a].routings[layer];
    const wb::Routing& kr = s.momentum[b].routings[layer];
    const std::int64_t B = s.online[a].cls.size(0);
    const at::Tensor& qg = gate_vectors(qr);
    const std::int64_t tpi = tokens_per_image(qr, B, qg.size(0));
    wb::MatchInput in;
    in.grid = grid_of(tpi - 1);
    in.layer = layer;
    if (s.batch && s.batch->geometry.size() >= 2) {
      in.query_view = &s.batch->geometry[a];
      in.key_view = &s.batch->geometry[b];
    }
    auto patches = [&](const at::Tensor& t) {
      return t.defined() ? per_image(t.detach(), B, tpi).narrow(1, 1, tpi - 1) : at::Tensor();
    };
    in.query_features = patches(qr.tokens);
    in.key_features = patches(kr.tokens);
    in.query_gates = patches(qg);
    in.key_gates = patches(gate_vectors(kr));
    return in;
  }

  Terms direction(const wb::StepState& s, std::size_t layer, int a, int b,
                  const wb::Match& match) const {
    wb::Communicator& comm = *s.comm;
    const wb::Routing& qr = s.online[a].routings[layer];
    const wb::Routing& kr = s.momentum[b].routings[layer];
    const std::int64_t B = s.online[a].cls.size(0);
    const at::Tensor& qg = gate_vectors(qr);
    const std::int64_t tpi = tokens_per_image(qr, B, qg.size(0)), N = tpi - 1;
    const at::Tensor q = wb::l2_normalize(per_image(qg, B, tpi));  // [B, 1 + N, E]
    const at::Tensor k = wb::l2_normalize(per_image(gate_vectors(kr), B, tpi)).detach();
    const at::Tensor q_cls = q.select(1, 0), k_cls = k.select(1, 0);  // [B, E]
    const at::Tensor q_patch = q.narrow(1, 1, N), k_patch = k.narrow(1, 1, N);
    if (!match.index.defined() || !match.valid.defined() ||
        match.index.sizes() != at::IntArrayRef({B, N}) ||
        match.valid.sizes() != match.index.sizes())
      fail("the matcher returned a match of the wrong shape (expected [" + std::to_string(B) +
           ", " + std::to_string(N) + "] index and valid)");
    const at::Tensor index = match.index.to(q.device()).to(at::kLong);
    const at::Tensor valid = match.valid.to(q.device()).to(at::kBool);
    // k_{j, match_j(m)}: every image's key at its own match of query position m.
    const at::Tensor k_matched = k_patch.gather(1, index.unsqueeze(2).expand({B, N, k.size(2)}));

    Terms t;
    t.valid = valid.sum().to(at::kFloat);
    t.pairs = static_cast<double>(B * N);
    const at::Tensor mask = valid.to(q.dtype());
    // Eq. 8 divides by every patch; "valid" by the valid pairs (none valid: 0 / 1, never 0 / 0).
    const at::Tensor count =
        mean_all_ ? at::full({}, t.pairs, mask.options()) : mask.sum().clamp_min(1);
    if (!negatives_) {
      t.cls = -(q_cls * k_cls).sum(1).mean();
      t.patch = -((q_patch * k_matched).sum(2) * mask).sum() / count;
      return t;
    }
    const at::Tensor own =
        at::arange(B, index.options()) + static_cast<std::int64_t>(comm.rank()) * B;
    // CLS: logits over the CLS keys of every image of the global batch.
    const at::Tensor cls_keys = comm.all_gather(k_cls.contiguous());  // [Bg, E]
    // Logits in fp32 under bf16 autocast (docs/methods.md §1), as MoCo's.
    t.cls =
        at::cross_entropy_loss(wb::at_least_fp32(q_cls.mm(cls_keys.t())) / tau_, own) * (2 * tau_);
    // Patches, per query position m: logits[m, i, j] = <q_{i,m}, k_{j, match_j(m)}> / tau.
    const at::Tensor keys = comm.all_gather(k_matched.contiguous());  // [Bg, N, E]
    const at::Tensor logits =
        wb::at_least_fp32(at::bmm(q_patch.transpose(0, 1), keys.permute({1, 2, 0}))) /
        tau_;  // [N, B, Bg]
    const at::Tensor logp = at::log_softmax(logits, 2);
    const at::Tensor positive =
        logp.gather(2, own.view({1, B, 1}).expand({N, B, 1})).squeeze(2).t();  // [B, N]
    // where(), not a product with the mask: unused entries contribute neither value nor gradient.
    const at::Tensor nll = at::where(valid, -positive, at::zeros_like(positive));
    t.patch = nll.sum() / count * (2 * tau_);
    return t;
  }

  double weight_, alpha_, tau_;
  std::string vector_;
  bool mean_all_, negatives_, log_layers_;
  std::int64_t grid_;
  std::shared_ptr<wb::Matcher> matcher_;
};

}  // namespace

WORKBENCH_PLUGIN("loss ogar: CR-MoE's gate alignment regularisation") {
  using wb::ParamSpec;
  registry.add_loss(
      "ogar",
      "CR-MoE OGAR: InfoNCE on L2-normalised gate vectors (online queries, momentum keys) for "
      "CLS tokens and matched patches, summed over MoE layers; L_G = (1 - alpha) L_CLS + alpha "
      "L_patch",
      {
          ParamSpec::real("weight", 0.001, "multiplies L_G (CR-MoE w_G)").at_least(0),
          ParamSpec::real("alpha", 0.3, "weight of the patch term; 1 - alpha for CLS").range(0, 1),
          ParamSpec::moved("tau", "train.temperature",
                           "CR-MoE: the same temperature as MoCo's contrastive loss"),
          ParamSpec::text("gate_vector", "sparse",
                          "sparse = probabilities at the top-k experts, 0 elsewhere (the paper's "
                          "G(x)); dense = the full softmax; logits = the gate's logits of all "
                          "experts, after the training noise (the public reference code)")
              .one_of({"sparse", "dense", "logits"}),
          ParamSpec::text("patch_mean", "all",
                          "all = the patch term's sum over valid pairs divided by all patches "
                          "(eq. 7-8: an invalid patch counts 0); valid = divided by the valid "
                          "pairs (the all value / the valid fraction)")
              .one_of({"all", "valid"}),
          ParamSpec::boolean("negatives", true,
                             "InfoNCE with other images as negatives; false = negative cosine "
                             "similarity of the matched pairs only (Table 6)"),
          ParamSpec::plugin("matcher", wb::Kind::Matcher, "overlap",
                            "how patches of the two views are paired"),
          ParamSpec::moved("momentum", "train.momentum",
                           "the trainer owns the momentum encoder and its schedule"),
          ParamSpec::boolean("log_layers", true, "also log each MoE layer's cls and patch terms"),
      },
      [](const wb::Params& p, const wb::LossContext& c) { return std::make_shared<Ogar>(p, c); });
  registry.add_check(wb::Kind::Loss, "ogar",
                     [](const wb::Params&, const wb::ValidationContext&, wb::ValidationReport& r) {
                       r.needs = needs();
                     });
}
