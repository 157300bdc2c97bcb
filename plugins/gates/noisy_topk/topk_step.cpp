// The noisy top-k step after the logits, op by op and fused (topk_step.h).
#include "topk_step.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <tuple>
#include <utility>
#include <vector>

#include "workbench/balance.h"

namespace noisy_topk {

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
    // d(loss)/d(column sum) per expert, times the loss's own gradient.
    auto coefficients = [&](const at::Tensor& g, const char* key, double scale) {
      std::vector<double> d;
      if (!g.defined()) return at::Tensor();
      squared_cv(ctx->saved_data[key].toDoubleVector(), &d);
      const double factor = g.item<double>() * scale;
      for (double& x : d) x *= factor;
      return at::tensor(d, probs.options().dtype(at::kDouble)).to(probs.scalar_type());
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
