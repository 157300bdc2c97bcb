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
//
// Speed, not a choice of method: on float32/float64 CPU tensors everything after the logits runs
// fused (below: one autograd node, one pass per token forward and backward beside
// vectorised softmax / erfc / exp); fused_cpu = false, and every other device or dtype, run the
// same function op by op.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "workbench/balance.h"
#include "workbench/gate.h"
#include "workbench/layers.h"
#include "workbench/plugin.h"

// ---- the step after the logits ----------------------------------------------------------------
// The part of the noisy top-k router after the logits: training noise, softmax, top-k, the
// combine weights and V-MoE's importance and load losses. Two implementations of the same
// function: op by op (LibTorch operations that autograd records; any device and dtype, and the
// reference), and fused for float32/float64 CPU tensors: one autograd node with a hand-written
// backward, whose top-k, combine weights, gates and loss statistics take one pass over each
// token's E logits forward and one backward, beside LibTorch's vectorised softmax, erfc and exp
// on whole tensors. It replaces some forty operations on [T, E] tensors and their autograd nodes.
namespace noisy_topk {

struct TopK {
  at::Tensor noisy;       // [T, E] the logits that routed (after the noise; the logits without it)
  at::Tensor probs;       // [T, E] softmax(noisy)
  at::Tensor experts;     // [T, k] int64: the k largest noisy logits, largest first
  at::Tensor top_probs;   // [T, k] probs at those experts
  at::Tensor gates;       // [T, E] top_probs at their experts, 0 elsewhere
  at::Tensor importance;  // [] CV² of Σ_t probs (clean: of Σ_t softmax(logits))
  at::Tensor load;        // [] V-MoE's load loss; undefined without noise (sigma = 0)
};

// logits: [T, E] W·x without noise; sigma: the noise std (0 = none, no load loss); clean: the
// importance loss sums softmax(logits) instead of the noisy probabilities (only with noise).
// The noise is at::randn_like(logits) · sigma in both, so that one seed gives both one draw.
TopK topk_ops(const at::Tensor& logits, double sigma, std::int64_t k, bool clean);
TopK topk_fused(const at::Tensor& logits, double sigma, std::int64_t k, bool clean);

// Whether topk_fused takes these logits: a [T, E] float32 or float64 CPU tensor.
bool fused_applies(const at::Tensor& logits);

TopK topk_ops(const at::Tensor& logits, double sigma, std::int64_t k, bool clean) {
  TopK r;
  r.noisy = wb::add_noise(logits, sigma);
  r.probs = at::softmax(r.noisy, 1);
  // Top-k of the noisy logits = top-k of the probabilities; their k-th value is also the
  // threshold of the load loss. Sorted: first choice first.
  at::Tensor top_logit;
  std::tie(top_logit, r.experts) = r.noisy.topk(k, 1);
  r.top_probs = r.probs.gather(1, r.experts);
  r.gates = at::zeros_like(r.probs).scatter(1, r.experts, r.top_probs);
  r.importance = wb::importance_loss(clean && sigma > 0 ? at::softmax(logits, 1) : r.probs);
  if (sigma > 0) r.load = wb::load_loss(logits, top_logit.narrow(1, k - 1, 1), sigma);
  return r;
}

bool fused_applies(const at::Tensor& logits) {
  return logits.defined() && logits.is_cpu() && logits.layout() == at::kStrided &&
         logits.dim() == 2 &&
         (logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble);
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Tokens per unit of work. The column sums of the losses are added per chunk and then in chunk
// order, so that they do not depend on the number of threads.
constexpr std::int64_t kChunkRows = 256;
// Up to this k the top-k is found by repeated selection; above it, by at::topk's algorithm.
constexpr std::int64_t kSelectionMaxK = 4;

struct Shape {
  std::int64_t T = 0, E = 0, k = 0;
  double sigma = 0;    // 0: no noise and no load loss
  bool clean = false;  // the importance loss sums softmax(logits) (only with noise)
};

// The k largest of v[0, E), largest first, by repeated selection. False where the result is not
// unique (two of the values that decide it are equal) or a value is NaN: at::topk's own order
// of ties is then what counts (topk_like_aten).
template <class scalar_t>
bool topk_distinct(const scalar_t* v, std::int64_t E, std::int64_t k, std::int64_t* out) {
  for (std::int64_t j = 0; j < k; ++j) {
    std::int64_t best = -1;
    scalar_t top = 0;
    bool tie = false;
    for (std::int64_t e = 0; e < E; ++e) {
      const scalar_t x = v[e];
      if (std::isnan(x)) return false;
      if (std::find(out, out + j, e) != out + j) continue;
      if (best < 0 || x > top) {
        best = e, top = x, tie = false;
      } else if (x == top) {
        tie = true;
      }
    }
    if (tie) return false;
    out[j] = best;
  }
  return true;
}

// The k largest of v[0, E) exactly as at::topk(k, sorted) picks them on the CPU (LibTorch's
// topk_impl_loop): the same standard algorithms with the same comparator (NaN largest) on the
// same (value, index) pairs, so that ties come out in the same order.
template <class scalar_t>
void topk_like_aten(const scalar_t* v, std::int64_t E, std::int64_t k, std::int64_t* out,
                    std::vector<std::pair<scalar_t, std::int64_t>>& queue) {
  queue.resize(E);
  for (std::int64_t e = 0; e < E; ++e) queue[e] = {v[e], e};
  auto larger = [](const std::pair<scalar_t, std::int64_t>& a,
                   const std::pair<scalar_t, std::int64_t>& b) {
    return (std::isnan(a.first) && !std::isnan(b.first)) || a.first > b.first;
  };
  if (k * 64 <= E) {
    std::partial_sort(queue.begin(), queue.begin() + k, queue.end(), larger);
  } else {
    std::nth_element(queue.begin(), queue.begin() + k - 1, queue.end(), larger);
    std::sort(queue.begin(), queue.begin() + k - 1, larger);
  }
  for (std::int64_t j = 0; j < k; ++j) out[j] = queue[j].second;
}

// The argument of erfc in the load loss's P = 1 - Φ((threshold - logit) / σ) = erfc(z) / 2,
// z = (threshold - logit) / σ / √2, in the order of operations of wb::load_loss.
template <class scalar_t>
scalar_t load_z(scalar_t threshold, scalar_t logit, scalar_t sigma) {
  return (threshold - logit) / sigma / static_cast<scalar_t>(std::sqrt(2.0));
}

// The fused pass reads and writes these [T, E] (and [T, k]) tensors row by row. The
// transcendental functions (softmax's exp, erfc, the Gaussian) run before and after it as
// LibTorch's vectorised whole-tensor kernels: the C library's scalar ones are several times
// slower, and much slower still for the large z that a small σ gives (their results underflow).
template <class scalar_t>
struct ForwardRows {
  const scalar_t *logits, *noisy, *probs;
  const scalar_t* summed;  // what the importance loss sums: probs, or softmax(logits) (clean)
  scalar_t *gates, *top_probs;
  std::int64_t* experts;
  scalar_t* z;  // the load loss's erfc arguments; null without noise
};

// Tokens [begin, end): top-k, combine weights, gates, the load loss's z, and each expert's sum
// over these tokens of the importance loss's probabilities.
template <class scalar_t>
void forward_rows(const Shape& s, const ForwardRows<scalar_t>& a, std::int64_t begin,
                  std::int64_t end, double* importance) {
  const std::int64_t E = s.E, k = s.k;
  const auto sigma = static_cast<scalar_t>(s.sigma);
  std::vector<std::pair<scalar_t, std::int64_t>> queue;
  for (std::int64_t t = begin; t < end; ++t) {
    const scalar_t *l = a.logits + t * E, *n = a.noisy + t * E, *p = a.probs + t * E;
    const scalar_t* q = a.summed + t * E;
    scalar_t* g = a.gates + t * E;
    std::int64_t* top = a.experts + t * k;
    if (k > kSelectionMaxK || !topk_distinct(n, E, k, top)) topk_like_aten(n, E, k, top, queue);
    std::fill(g, g + E, scalar_t(0));
    for (std::int64_t j = 0; j < k; ++j) g[top[j]] = a.top_probs[t * k + j] = p[top[j]];
    for (std::int64_t e = 0; e < E; ++e) importance[e] += q[e];
    if (a.z) {
      const scalar_t threshold = n[top[k - 1]];
      for (std::int64_t e = 0; e < E; ++e) a.z[t * E + e] = load_z(threshold, l[e], sigma);
    }
  }
}

template <class scalar_t>
struct BackwardRows {
  const scalar_t *probs, *clean;  // clean: softmax(logits), with s.clean
  const std::int64_t* experts;
  // Gradients of the outputs, null where an output got none.
  const scalar_t *g_noisy, *g_probs, *g_gates, *g_top;
  // d(loss)/d(column sum) of the importance and d(loss)/d(P) of the load per expert, the
  // outputs' gradients folded in; null where that loss got no gradient.
  const scalar_t *c_importance, *c_load;
  const scalar_t* gauss;  // [T, E] exp(-z²) of the load loss, with c_load
  scalar_t* grad;         // [T, E] gradient of the logits
};

// The gradient of the logits for tokens [begin, end): softmax backward of everything that
// reaches the probabilities, plus the noisy logits' own gradient, the load loss's terms at the
// logits and at the threshold (the k-th noisy logit; dP/dlogit = exp(-z²) / (σ √(2π))), and the
// clean importance's softmax backward.
template <class scalar_t>
void backward_rows(const Shape& s, const BackwardRows<scalar_t>& a, std::int64_t begin,
                   std::int64_t end) {
  const std::int64_t E = s.E, k = s.k;
  constexpr double kSqrtTwoPi = 2.5066282746310002;  // √(2π)
  const auto density = static_cast<scalar_t>(1.0 / (s.sigma * kSqrtTwoPi));
  std::vector<scalar_t> gp(E);
  for (std::int64_t t = begin; t < end; ++t) {
    const scalar_t* p = a.probs + t * E;
    const std::int64_t* top = a.experts + t * k;
    scalar_t* out = a.grad + t * E;
    for (std::int64_t e = 0; e < E; ++e)
      gp[e] = (a.g_probs ? a.g_probs[t * E + e] : scalar_t(0)) +
              (a.c_importance && !s.clean ? a.c_importance[e] : scalar_t(0));
    for (std::int64_t j = 0; j < k; ++j)
      gp[top[j]] += (a.g_top ? a.g_top[t * k + j] : scalar_t(0)) +
                    (a.g_gates ? a.g_gates[t * E + top[j]] : scalar_t(0));
    scalar_t dot = 0;
    for (std::int64_t e = 0; e < E; ++e) dot += p[e] * gp[e];
    for (std::int64_t e = 0; e < E; ++e)
      out[e] = p[e] * (gp[e] - dot) + (a.g_noisy ? a.g_noisy[t * E + e] : scalar_t(0));
    if (a.c_load) {
      scalar_t at_threshold = 0;
      for (std::int64_t e = 0; e < E; ++e) {
        const scalar_t d = a.c_load[e] * density * a.gauss[t * E + e];
        out[e] += d;
        at_threshold -= d;
      }
      out[top[k - 1]] += at_threshold;
    }
    if (a.c_importance && s.clean) {
      const scalar_t* c = a.clean + t * E;
      scalar_t dot_clean = 0;
      for (std::int64_t e = 0; e < E; ++e) dot_clean += c[e] * a.c_importance[e];
      for (std::int64_t e = 0; e < E; ++e) out[e] += c[e] * (a.c_importance[e] - dot_clean);
    }
  }
}

// CV²(v) = var(v) / mean(v)² with the population variance (wb::squared_cv), and, when grad is
// given, its derivative by each entry: 2 (v_e - m) / (n m²) - 2 var / (n m³).
double squared_cv(const std::vector<double>& v, std::vector<double>* grad) {
  const auto n = static_cast<double>(v.size());
  double mean = 0, var = 0;
  for (double x : v) mean += x;
  mean /= n;
  for (double x : v) var += (x - mean) * (x - mean);
  var /= n;
  if (grad) {
    grad->resize(v.size());
    for (std::size_t e = 0; e < v.size(); ++e)
      (*grad)[e] = 2 * (v[e] - mean) / (n * mean * mean) - 2 * var / (n * mean * mean * mean);
  }
  return var / (mean * mean);
}

const void* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr() : nullptr;
}

// Outputs: noisy, probs, gates, top_probs, importance, load (0, not differentiable, without
// noise), experts. Inputs: logits [T, E] and noise [T, E] (unscaled; [0] without noise).
class FusedTopK : public torch::autograd::Function<FusedTopK> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& logits,
                               const at::Tensor& noise, double sigma, std::int64_t k, bool clean) {
    const at::Tensor l = logits.contiguous();
    const bool noised = sigma > 0;
    const Shape s{l.size(0), l.size(1), k, noised ? sigma : 0.0, clean && noised};
    // The operations of wb::add_noise and at::softmax, so that the values are theirs.
    at::Tensor noisy = noised ? l + noise * sigma : l.clone();
    at::Tensor probs = at::softmax(noisy, 1);
    const at::Tensor clean_probs = s.clean ? at::softmax(l, 1) : at::Tensor();
    at::Tensor gates = at::empty_like(l), top = at::empty({s.T, k}, l.options());
    at::Tensor experts = at::empty({s.T, k}, l.options().dtype(at::kLong));
    const at::Tensor z = noised ? at::empty_like(l) : at::Tensor();
    const std::int64_t chunks = (s.T + kChunkRows - 1) / kChunkRows;
    std::vector<double> importance(chunks * s.E, 0.0);
    AT_DISPATCH_FLOATING_TYPES(l.scalar_type(), "noisy_topk_fused", [&] {
      const ForwardRows<scalar_t> rows{
          l.data_ptr<scalar_t>(),           noisy.data_ptr<scalar_t>(),
          probs.data_ptr<scalar_t>(),       (s.clean ? clean_probs : probs).data_ptr<scalar_t>(),
          gates.data_ptr<scalar_t>(),       top.data_ptr<scalar_t>(),
          experts.data_ptr<std::int64_t>(), noised ? z.data_ptr<scalar_t>() : nullptr};
      at::parallel_for(0, chunks, 1, [&](std::int64_t c0, std::int64_t c1) {
        for (std::int64_t c = c0; c < c1; ++c)
          forward_rows(s, rows, c * kChunkRows, std::min(s.T, (c + 1) * kChunkRows),
                       importance.data() + c * s.E);
      });
    });
    // Per expert: the importance's column sum (chunk by chunk, in order), the load's mean P.
    std::vector<double> sums(s.E, 0.0), means;
    for (std::size_t i = 0; i < importance.size(); ++i) sums[i % s.E] += importance[i];
    if (noised) {
      const at::Tensor m = at::erfc(z).sum(0, false, at::kDouble).mul_(0.5 / double(s.T));
      means.assign(m.data_ptr<double>(), m.data_ptr<double>() + s.E);
    }
    at::Tensor importance_loss = at::scalar_tensor(squared_cv(sums, nullptr), l.options());
    at::Tensor load_loss =
        at::scalar_tensor(noised ? squared_cv(means, nullptr) : 0.0, l.options());

    ctx->save_for_backward({probs, clean_probs, experts, z});
    ctx->saved_data["sigma"] = s.sigma;
    ctx->saved_data["clean"] = s.clean;
    ctx->saved_data["sums"] = sums;
    ctx->saved_data["means"] = means;
    ctx->mark_non_differentiable(noised ? variable_list{experts}
                                        : variable_list{experts, load_loss});
    ctx->set_materialize_grads(false);  // outputs without a gradient cost nothing
    return {noisy, probs, gates, top, importance_loss, load_loss, experts};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &probs = saved[0], &clean = saved[1], &experts = saved[2], &z = saved[3];
    const Shape s{probs.size(0), probs.size(1), experts.size(1),
                  ctx->saved_data["sigma"].toDouble(), ctx->saved_data["clean"].toBool()};
    // d(loss)/d(column sum) per expert, times the loss's own gradient: a tensor product, not a
    // read of that gradient (the training step reads nothing back from the device).
    auto coefficients = [&](const at::Tensor& g, const char* key, double scale) {
      std::vector<double> d;
      if (!g.defined()) return at::Tensor();
      squared_cv(ctx->saved_data[key].toDoubleVector(), &d);
      for (double& x : d) x *= scale;
      const at::Tensor c = at::tensor(d, probs.options().dtype(at::kDouble));
      return c.mul(g.to(at::kDouble)).to(probs.scalar_type());
    };
    const at::Tensor c_importance = coefficients(grads[4], "sums", 1.0);
    const at::Tensor c_load = s.sigma > 0
                                  ? coefficients(grads[5], "means", 1.0 / static_cast<double>(s.T))
                                  : at::Tensor();
    at::Tensor gauss;  // exp(-z²), vectorised
    if (c_load.defined()) gauss = z.square().neg_().exp_();
    std::vector<at::Tensor> g(4);
    for (int i = 0; i < 4; ++i)
      if (grads[i].defined()) g[i] = grads[i].contiguous();
    at::Tensor grad = at::empty_like(probs);
    AT_DISPATCH_FLOATING_TYPES(probs.scalar_type(), "noisy_topk_fused_backward", [&] {
      auto ptr = [](const at::Tensor& t) { return static_cast<const scalar_t*>(data_or_null(t)); };
      const BackwardRows<scalar_t> rows{probs.data_ptr<scalar_t>(),
                                        ptr(clean),
                                        experts.data_ptr<std::int64_t>(),
                                        ptr(g[0]),
                                        ptr(g[1]),
                                        ptr(g[2]),
                                        ptr(g[3]),
                                        ptr(c_importance),
                                        ptr(c_load),
                                        ptr(gauss),
                                        grad.data_ptr<scalar_t>()};
      at::parallel_for(0, s.T, kChunkRows, [&](std::int64_t begin, std::int64_t end) {
        backward_rows(s, rows, begin, end);
      });
    });
    return {grad, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

TopK topk_fused(const at::Tensor& logits, double sigma, std::int64_t k, bool clean) {
  if (!fused_applies(logits))
    throw std::invalid_argument(
        "gate noisy_topk: the fused step needs [T, E] float32 or float64 CPU logits");
  // The draw of wb::add_noise, so that one seed gives both implementations one noise.
  const at::Tensor noise = sigma > 0 ? at::randn_like(logits) : at::empty({0}, logits.options());
  const variable_list out = FusedTopK::apply(logits, noise, sigma, k, clean);
  TopK r;
  r.noisy = out[0], r.probs = out[1], r.gates = out[2], r.top_probs = out[3];
  r.importance = out[4];
  if (sigma > 0) r.load = out[5];
  r.experts = out[6];
  return r;
}

}  // namespace noisy_topk

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
        clean_importance_(p.text("importance") == "clean"),
        fused_cpu_(p.boolean("fused_cpu")) {
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
    const bool fused = fused_cpu_ && noisy_topk::fused_applies(logits);
    const noisy_topk::TopK t = fused ? noisy_topk::topk_fused(logits, sigma, k_, clean_importance_)
                                     : noisy_topk::topk_ops(logits, sigma, k_, clean_importance_);
    wb::Routing r;
    r.experts = t.experts;
    r.probs = t.probs;
    r.logits = t.noisy;
    r.gates = t.gates;
    const auto factor = in.training ? capacity_factor_ : eval_capacity_factor_;
    if (factor) {
      r.kept = keep_within_capacity(t.experts, t.top_probs.select(1, 0).detach(), experts_,
                                    group_size_, *factor, bpr_);
      r.weights = t.top_probs.masked_fill(r.kept.logical_not(), 0);
    } else {
      r.kept = at::ones_like(t.experts, t.experts.options().dtype(at::kBool));
      r.weights = t.top_probs;
    }
    r.aux["importance"] = t.importance;
    if (t.load.defined()) r.aux["load"] = t.load;
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
  bool bpr_, clean_importance_, fused_cpu_;
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
          ParamSpec::boolean(
              "fused_cpu", true,
              "float32/float64 CPU logits: noise, softmax, top-k, combine weights and both "
              "losses as one autograd node with a hand-written backward; false = the same "
              "function op by op (what other devices and dtypes run)"),
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
