// Gate "noisy_topk": the V-MoE router (Riquelme et al. 2021; docs/methods.md §2). Logits W·x
// without bias, Gaussian noise of std noise_std / E in training, softmax, top-k; the combine
// weights are the softmax probabilities at the chosen experts (not renormalised). Optional expert
// capacity with V-MoE's slot order (all first choices before any second choice) and Batch
// Prioritized Routing. Auxiliary losses: importance always, load only while noise is on.
//
// Choices where the papers and docs/methods.md leave room:
// - W starts N(0, 1/dim) (LeCun normal, the default kernel init of V-MoE's flax Dense router);
//   init_std overrides it, 0 gives zeros.
// - Both losses are squared coefficients of variation with the population variance (jnp.var).
// - Importance sums the probabilities that routed (after the noise in training), as docs/methods.md
//   §2 defines it; importance = "clean" uses softmax(W·x) without noise, the V-MoE paper's
//   definition and what its current code does.
// - In eval (or with noise_std = 0) there is no load loss: the key is absent from Routing::aux.
// - Capacity is per group of group_size consecutive tokens (default: all tokens of the layer,
//   i.e. the whole batch); the last group may be smaller and gets its own capacity. C is not
//   rounded up to a multiple of 4 as V-MoE's code does by default. The losses are computed over
//   all tokens of the layer, not per group and averaged as in V-MoE (equal for one group).
// - Routing::gates keeps the probabilities of the top-k choices even where the capacity dropped
//   an assignment (it is the routing decision); weights are 0 there.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>

#include "workbench/balance.h"
#include "workbench/gate.h"
#include "workbench/layers.h"
#include "workbench/plugin.h"

namespace {

// A token goes to k different experts of its layer.
std::string k_problem(std::int64_t k, std::int64_t experts) {
  if (k >= 1 && k <= experts) return "";
  return "k = " + std::to_string(k) + " must be between 1 and the number of experts (" +
         std::to_string(experts) + ")";
}

// C = ceil(tokens * k * factor / E). The small slack keeps a product that is an integer in exact
// arithmetic (e.g. 10 * 2 * 1.1) from being rounded up by floating-point error.
std::int64_t capacity(std::int64_t tokens, std::int64_t k, double factor, std::int64_t experts) {
  const double c = static_cast<double>(tokens * k) * factor / static_cast<double>(experts);
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(c - 1e-9 * c)));
}

// Which (token, choice) assignments fit into their expert's capacity. Tokens are routed in
// groups of group_size consecutive tokens (0 = one group); every group has its own capacity.
// Inside a (group, expert) bucket slots go by choice rank first (every first choice before any
// second choice), then by the token's rank: its position, or with BPR its rank by priority
// (largest first). One sort of a composite key gives every assignment its slot, no loops.
at::Tensor keep_within_capacity(const at::Tensor& experts, const at::Tensor& priority,
                                std::int64_t num_experts, std::int64_t group_size, double factor,
                                bool bpr) {
  const auto T = experts.size(0), k = experts.size(1);
  const auto S = group_size > 0 ? std::min(group_size, T) : T;
  const auto G = (T + S - 1) / S;
  const auto opts = experts.options();
  const at::Tensor token = at::arange(T, opts);
  const at::Tensor group = at::div(token, S, "trunc");
  const at::Tensor in_group = token - group * S;

  at::Tensor rank = in_group;
  if (bpr) {
    // Stable sorts: by priority (descending), then by group; ties keep token order.
    const at::Tensor by_priority = std::get<1>(at::sort(priority, true, 0, /*descending=*/true));
    const at::Tensor by_group =
        std::get<1>(at::sort(group.index_select(0, by_priority), true, 0, false));
    const at::Tensor order = by_priority.index_select(0, by_group);
    rank = at::empty_like(token).scatter_(0, order, in_group);
  }

  const at::Tensor bucket = (group.unsqueeze(1) * num_experts + experts).reshape({-1});
  const at::Tensor choice = at::arange(k, opts).repeat({T});
  // Each token's rank k times (expand: repeat_interleave reads its size back from the device).
  const at::Tensor key = (bucket * k + choice) * S + rank.unsqueeze(1).expand({T, k}).reshape({-1});
  const at::Tensor order = std::get<1>(at::sort(key, false, 0, false));  // keys are unique
  const at::Tensor counts =
      at::zeros({G * num_experts}, opts).scatter_add_(0, bucket, at::ones_like(bucket));
  const at::Tensor start = counts.cumsum(0) - counts;
  const at::Tensor slot_sorted =
      at::arange(T * k, opts) - start.index_select(0, bucket.index_select(0, order));
  const at::Tensor slot = at::empty_like(slot_sorted).scatter_(0, order, slot_sorted);

  at::Tensor cap = at::full({T}, capacity(S, k, factor, num_experts), opts);
  const auto last = T - (G - 1) * S;
  if (last != S) cap.narrow(0, (G - 1) * S, last).fill_(capacity(last, k, factor, num_experts));
  return slot.view({T, k}) < cap.unsqueeze(1);
}

class NoisyTopK : public wb::Gate {
 public:
  NoisyTopK(const wb::Params& p, const wb::GateShape& shape)
      : experts_(shape.experts),
        k_(p.integer("k")),
        noise_std_(p.real("noise_std")),
        capacity_factor_(p.maybe_real("capacity_factor")),
        eval_capacity_factor_(p.maybe_real("eval_capacity_factor")),
        group_size_(p.integer("group_size")),
        bpr_(p.boolean("bpr")),
        clean_importance_(p.text("importance") == "clean") {
    if (const std::string problem = k_problem(k_, experts_); !problem.empty())
      throw std::invalid_argument("gate noisy_topk: " + problem);
    if (!eval_capacity_factor_) eval_capacity_factor_ = capacity_factor_;
    const double init_std = p.maybe_real("init_std").value_or(1.0 / std::sqrt(double(shape.dim)));
    weight_ = register_parameter("weight", at::randn({experts_, shape.dim}) * init_std);
  }

  wb::Routing route(const at::Tensor& x, const wb::GateInput& in) override {
    const double sigma = in.training ? noise_std_ / static_cast<double>(experts_) : 0.0;
    // fp32 logits under bf16 autocast: the probabilities, the top-k and the aux losses need them.
    const at::Tensor logits = wb::at_least_fp32(x.mm(weight_.t()));
    const at::Tensor noisy = wb::add_noise(logits, sigma);
    const at::Tensor probs = at::softmax(noisy, 1);
    // Top-k of the noisy logits = top-k of the probabilities; their k-th value is also the
    // threshold of the load loss. Sorted: first choice first.
    auto [top_logit, top_e] = noisy.topk(k_, 1);
    const at::Tensor top_p = probs.gather(1, top_e);

    wb::Routing r;
    r.experts = top_e;
    r.probs = probs;
    r.logits = noisy;
    r.gates = at::zeros_like(probs).scatter(1, top_e, top_p);
    const auto factor = in.training ? capacity_factor_ : eval_capacity_factor_;
    if (factor) {
      r.kept = keep_within_capacity(top_e, top_p.select(1, 0).detach(), experts_, group_size_,
                                    *factor, bpr_);
      r.weights = top_p.masked_fill(r.kept.logical_not(), 0);
    } else {
      r.kept = at::ones_like(top_e, top_e.options().dtype(at::kBool));
      r.weights = top_p;
    }
    r.aux["importance"] =
        wb::importance_loss(clean_importance_ && sigma > 0 ? at::softmax(logits, 1) : probs);
    if (sigma > 0) r.aux["load"] = wb::load_loss(logits, top_logit.narrow(1, k_ - 1, 1), sigma);
    r.tokens = x;
    r.tokens_per_image = in.tokens_per_image;
    return r;
  }

  std::int64_t k() const override { return k_; }

 private:
  at::Tensor weight_;  // [E, D]
  std::int64_t experts_, k_;
  double noise_std_;
  std::optional<double> capacity_factor_, eval_capacity_factor_;
  std::int64_t group_size_;
  bool bpr_, clean_importance_;
};

}  // namespace

WORKBENCH_PLUGIN("gate noisy_topk: the V-MoE noisy top-k router") {
  using wb::ParamSpec;
  using wb::ParamType;
  registry.add_gate(
      "noisy_topk",
      "V-MoE router: softmax(W·x + noise) top-k, combine weights = softmax probabilities "
      "(not renormalised); importance and load losses; optional capacity and BPR",
      {
          ParamSpec::integer("k", 2, "experts per token").at_least(1),
          ParamSpec::real("noise_std", 1.0,
                          "training noise: N(0, (noise_std / E)^2) is added to the logits")
              .at_least(0),
          ParamSpec::optional("capacity_factor", ParamType::Float,
                              "expert capacity in training, C = ceil(group tokens x k x factor / "
                              "E); unset = dropless")
              .above(0),
          ParamSpec::optional("eval_capacity_factor", ParamType::Float,
                              "capacity factor in eval mode; unset = capacity_factor")
              .above(0),
          ParamSpec::integer("group_size", 0,
                             "tokens per routing group for the capacity, consecutive in batch "
                             "order (a multiple of the tokens per image keeps images whole); 0 = "
                             "all tokens of the layer")
              .at_least(0),
          ParamSpec::boolean("bpr", false,
                             "Batch Prioritized Routing: tokens with the largest routing weight "
                             "get expert slots first"),
          ParamSpec::text(
              "importance", "noisy",
              "probabilities the importance loss sums: noisy = the routing softmax "
              "(docs/methods.md §2), clean = softmax(W·x) without the training noise (V-MoE "
              "paper)")
              .one_of({"noisy", "clean"}),
          ParamSpec::optional("init_std", ParamType::Float,
                              "std of the normal initialisation of W; unset = 1/sqrt(dim) (LeCun "
                              "normal, the flax Dense default of V-MoE's router); 0 = zeros")
              .at_least(0),
      },
      [](const wb::Params& p, const wb::GateShape& s) {
        return std::make_shared<NoisyTopK>(p, s);
      });
  // Before anything runs: k against the experts the backbone declares (0 = not known).
  registry.add_check(
      wb::Kind::Gate, "noisy_topk",
      [](const wb::Params& p, const wb::ValidationContext& c, wb::ValidationReport& r) {
        if (c.experts > 0)
          if (std::string problem = k_problem(p.integer("k"), c.experts); !problem.empty())
            r.error("k", problem);
      });
}
