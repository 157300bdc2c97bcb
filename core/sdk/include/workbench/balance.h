// V-MoE's load-balancing terms (Riquelme et al. 2021, appendix A; docs/methods.md §2) for any gate
// to put into Routing::aux. Both are squared coefficients of variation with the population
// variance (jnp.var, ddof 0), written as var / mean² so that the gradient stays finite when every
// expert is equally used.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace wb {

// CV²(v) = var(v) / mean(v)² over all entries of v.
at::Tensor squared_cv(const at::Tensor& v);

// probs: [n, E] softmax over experts. L_imp = CV²(Σ_n probs).
at::Tensor importance_loss(const at::Tensor& probs);

// clean: [n, E] logits before the N(0, sigma²) noise; threshold: [n, 1] the k-th largest noisy
// logit of each item. P[n, e] = 1 - Φ((threshold_n - clean_ne) / sigma) is the chance that
// expert e would still be among the item's top k if e's noise were drawn again.
// L_load = CV²(mean_n P).
at::Tensor load_loss(const at::Tensor& clean, const at::Tensor& threshold, double sigma);
// The same with the threshold taken from the noisy logits [n, E] and k.
at::Tensor load_loss(const at::Tensor& clean, const at::Tensor& noisy, double sigma,
                     std::int64_t k);

// logits + N(0, sigma²) noise when sigma > 0, else the logits themselves.
at::Tensor add_noise(const at::Tensor& logits, double sigma);

}  // namespace wb
