// MoCE's data clustering (docs/methods.md §8): unit-norm features F, learnable unit-norm
// centroids C, assignments Q by Sinkhorn-Knopp with balanced marginals, centroids by SGD on the
// cross-entropy between Q and the softmax of the scores A = F C^T. Pure tensor code; the run
// directory, the features and the file are handled by cluster/cluster_run.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace wb {

struct ClusteringOptions {
  std::int64_t clusters = 256;  // m
  std::int64_t epochs = 10;
  std::int64_t batch = 256;  // images per SGD step
  double lr = 0.1, momentum = 0.9;
  // The paper's appendix says 0.9; with the projection to unit length after every step and
  // momentum 0.9 that decay replaces a centroid by its accumulated gradient at every step and
  // the clustering never settles (docs/moce.md); --weight-decay 0.9 runs it as printed.
  double weight_decay = 0.0;
  std::int64_t iterations = 3;   // Sinkhorn-Knopp iterations
  double epsilon = 0.05;         // entropy weight: Q is proportional to exp(A / epsilon)
  double temperature = 0.1;      // the cross-entropy's softmax(A / temperature)
  std::string assignment = "q";  // final cluster of an image: argmax of "q" or of "scores"
  std::uint64_t seed = 0;        // initial centroids and batch order
};

struct ClusteringResult {
  at::Tensor centroids;            // [m, D] float, unit rows
  at::Tensor assignment;           // [n] int64 in [0, m)
  std::vector<double> epoch_loss;  // mean cross-entropy of every epoch
};

// Sinkhorn-Knopp on scores [n, m] (n images, m clusters): Q proportional to exp(scores /
// epsilon), then `iterations` rounds of scaling every cluster's total to n / m and every
// image's total to 1 (SwAV's order: clusters first, images last). Returns Q [n, m], float64,
// every row summing to 1. Computed in the log domain (no underflow for small epsilon).
at::Tensor sinkhorn_knopp(const at::Tensor& scores, std::int64_t iterations, double epsilon);

// Validates the options against the feature count n (m <= n, positive sizes, a known
// assignment); throws std::invalid_argument naming the option.
void check_clustering_options(const ClusteringOptions& options, std::int64_t images);

// Clusters unit-norm features [n, D]. Initial centroids are m distinct features drawn at
// random (seeded); each epoch computes Q over all images with the current centroids, then
// visits the images in a random order in batches: SGD (PyTorch's semantics: decay added to the
// gradient, then momentum) on CE(Q, softmax(F C^T / T)), the centroids renormalised to unit
// length after every step. The final assignment is the argmax of a last Q (or of the scores).
ClusteringResult cluster_features(const at::Tensor& features, const ClusteringOptions& options);

}  // namespace wb
