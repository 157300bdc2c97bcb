// Load-balancing terms of the V-MoE router (Riquelme et al. 2021, appendix A), shared by the
// noisy_topk and cluster gates. Both are squared coefficients of variation with the population
// variance (jnp.var, ddof 0), written as var / mean^2 so the gradient stays finite when every
// expert is equally used.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>

namespace wb::gates {

inline at::Tensor squared_cv(const at::Tensor& v) {
  const at::Tensor mean = v.mean();
  return (v - mean).pow(2).mean() / mean.pow(2);
}

// probs: [n, E] softmax over experts. L_imp = CV²(Σ_n probs).
inline at::Tensor importance_loss(const at::Tensor& probs) {
  return squared_cv(probs.sum(0));
}

// clean, noisy: [n, E] logits before and after the N(0, sigma²) noise. The threshold of an item is
// its k-th largest noisy logit; P[n, e] = 1 - Φ((thr_n - clean_ne) / sigma) is the chance that
// expert e would still be among its top k if e's noise were drawn again. L_load = CV²(mean_n P).
inline at::Tensor load_loss(const at::Tensor& clean, const at::Tensor& noisy, double sigma,
                            std::int64_t k) {
  const at::Tensor threshold = std::get<0>(noisy.topk(k, 1)).select(1, k - 1).unsqueeze(1);
  const at::Tensor z = (threshold - clean) / sigma;
  const at::Tensor p = 0.5 * at::erfc(z / std::sqrt(2.0));  // 1 - Φ(z)
  return squared_cv(p.mean(0));
}

// logits + N(0, sigma²) when sigma > 0, else the logits themselves.
inline at::Tensor add_noise(const at::Tensor& logits, double sigma) {
  if (sigma <= 0) return logits;
  return logits + at::randn_like(logits) * sigma;
}

}  // namespace wb::gates
