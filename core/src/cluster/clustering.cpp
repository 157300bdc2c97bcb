#include "cluster/clustering.h"

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>

namespace wb {

at::Tensor sinkhorn_knopp(const at::Tensor& scores, std::int64_t iterations, double epsilon) {
  if (scores.dim() != 2) throw std::invalid_argument("sinkhorn_knopp: scores must be [n, m]");
  // In the log domain: the same scalings, but no column underflows to 0 for small epsilon.
  at::Tensor log_q = scores.to(at::kDouble) / epsilon;
  const double log_n = std::log(static_cast<double>(log_q.size(0)));
  const double log_m = std::log(static_cast<double>(log_q.size(1)));
  log_q = log_q - log_q.reshape({-1}).logsumexp(0);
  for (std::int64_t it = 0; it < iterations; ++it) {
    log_q = log_q - log_q.logsumexp(0, true) - log_m;  // every cluster holds 1/m of the mass
    log_q = log_q - log_q.logsumexp(1, true) - log_n;  // every image holds 1/n
  }
  return (log_q + log_n).exp();
}

void check_clustering_options(const ClusteringOptions& o, std::int64_t images) {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument("clustering: " + what);
  };
  need(o.clusters >= 1, "--clusters must be at least 1");
  need(o.clusters <= images, "--clusters = " + std::to_string(o.clusters) + " is more than the " +
                                 std::to_string(images) + " training images");
  need(o.epochs >= 1, "--epochs must be at least 1");
  need(o.batch >= 1, "--batch must be at least 1");
  need(o.lr > 0, "--lr must be > 0");
  need(o.momentum >= 0 && o.momentum < 1, "--momentum must be in [0, 1)");
  need(o.weight_decay >= 0, "--weight-decay must be >= 0");
  need(o.iterations >= 1, "--iterations must be at least 1");
  need(o.epsilon > 0, "--epsilon must be > 0");
  need(o.temperature > 0, "--temperature must be > 0");
  need(o.assignment == "q" || o.assignment == "scores",
       "--assignment must be q or scores, not '" + o.assignment + "'");
}

ClusteringResult cluster_features(const at::Tensor& features, const ClusteringOptions& o) {
  if (features.dim() != 2) throw std::invalid_argument("clustering: features must be [n, D]");
  const std::int64_t n = features.size(0);
  check_clustering_options(o, n);
  at::manual_seed(o.seed);
  const at::Tensor f = features.to(at::kFloat).contiguous();
  at::Tensor c = f.index_select(0, at::randperm(n, at::kLong).narrow(0, 0, o.clusters)).clone();
  at::Tensor velocity = at::zeros_like(c);

  ClusteringResult result;
  for (std::int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    at::Tensor q;
    {
      at::NoGradGuard no_grad;
      q = sinkhorn_knopp(f.mm(c.t()), o.iterations, o.epsilon).to(at::kFloat);
    }
    const at::Tensor order = at::randperm(n, at::kLong);
    double total = 0;
    std::int64_t steps = 0;
    for (std::int64_t start = 0; start < n; start += o.batch) {
      const at::Tensor idx = order.narrow(0, start, std::min(o.batch, n - start));
      const at::Tensor leaf = c.detach().requires_grad_(true);
      const at::Tensor logp =
          at::log_softmax(f.index_select(0, idx).mm(leaf.t()) / o.temperature, 1);
      const at::Tensor loss = -(q.index_select(0, idx) * logp).sum(1).mean();
      loss.backward();
      at::NoGradGuard no_grad;
      const at::Tensor grad = leaf.grad() + o.weight_decay * c;
      velocity = o.momentum * velocity + grad;
      c = c - o.lr * velocity;
      c = c / c.norm(2, 1, true).clamp_min(1e-12);
      total += loss.item<double>();
      ++steps;
    }
    result.epoch_loss.push_back(total / static_cast<double>(steps));
  }
  at::NoGradGuard no_grad;
  const at::Tensor scores = f.mm(c.t());
  result.centroids = c;
  result.assignment = o.assignment == "q"
                          ? sinkhorn_knopp(scores, o.iterations, o.epsilon).argmax(1)
                          : scores.argmax(1);
  return result;
}

}  // namespace wb
