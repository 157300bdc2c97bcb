// V-MoE's balancing terms (workbench/balance.h).
#include "workbench/balance.h"

#include <ATen/ATen.h>

#include <cmath>

namespace wb {

at::Tensor squared_cv(const at::Tensor& v) {
  const at::Tensor mean = v.mean();
  return (v - mean).pow(2).mean() / mean.pow(2);
}

at::Tensor importance_loss(const at::Tensor& probs) {
  return squared_cv(probs.sum(0));
}

at::Tensor load_loss(const at::Tensor& clean, const at::Tensor& threshold, double sigma) {
  const at::Tensor z = (threshold - clean) / sigma;
  const at::Tensor p = 0.5 * at::erfc(z / std::sqrt(2.0));  // 1 - Φ(z)
  return squared_cv(p.mean(0));
}

at::Tensor load_loss(const at::Tensor& clean, const at::Tensor& noisy, double sigma,
                     std::int64_t k) {
  return load_loss(clean, std::get<0>(noisy.topk(k, 1)).narrow(1, k - 1, 1), sigma);
}

at::Tensor add_noise(const at::Tensor& logits, double sigma) {
  if (sigma <= 0) return logits;
  return logits + at::randn_like(logits) * sigma;
}

}  // namespace wb
