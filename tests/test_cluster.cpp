// MoCE's clustering (docs/methods.md §8): Sinkhorn-Knopp against a plain re-computation and its
// balanced marginals, the partition of well-separated blobs recovered, and clusters.h5: round
// trip, identity of the data set, refusal of another data set.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "built_plugins.h"
#include "cluster/cluster_file.h"
#include "cluster/clustering.h"
#include "config/error.h"
#include "config/run_config.h"
#include "config/settings.h"
#include "test_data_helpers.h"

namespace {

// Sinkhorn-Knopp written out with loops over a row-major [n][m] array, as in the algorithm's
// statement: P = exp(A / eps) / sum, then alternately columns (clusters) to 1/m and rows (images)
// to 1/n; the result is scaled by n.
std::vector<std::vector<double>> sinkhorn_loops(const std::vector<std::vector<double>>& a,
                                                int iterations, double eps) {
  const std::size_t n = a.size(), m = a[0].size();
  std::vector<std::vector<double>> p(n, std::vector<double>(m));
  double total = 0;
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < m; ++j) total += p[i][j] = std::exp(a[i][j] / eps);
  for (auto& row : p)
    for (double& v : row) v /= total;
  for (int it = 0; it < iterations; ++it) {
    for (std::size_t j = 0; j < m; ++j) {
      double col = 0;
      for (std::size_t i = 0; i < n; ++i) col += p[i][j];
      for (std::size_t i = 0; i < n; ++i) p[i][j] /= col * static_cast<double>(m);
    }
    for (std::size_t i = 0; i < n; ++i) {
      double row = 0;
      for (std::size_t j = 0; j < m; ++j) row += p[i][j];
      for (std::size_t j = 0; j < m; ++j) p[i][j] /= row * static_cast<double>(n);
    }
  }
  for (auto& row : p)
    for (double& v : row) v *= static_cast<double>(n);
  return p;
}

}  // namespace

TEST_CASE("sinkhorn_knopp: equals the written-out algorithm, many iterations balance clusters") {
  at::manual_seed(3);
  const std::int64_t n = 12, m = 4;
  const at::Tensor scores = at::rand({n, m}, at::kDouble) * 2 - 1;
  std::vector<std::vector<double>> a(n, std::vector<double>(m));
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < m; ++j) a[i][j] = scores[i][j].item<double>();

  const at::Tensor q = wb::sinkhorn_knopp(scores, 3, 0.3);
  const auto expected = sinkhorn_loops(a, 3, 0.3);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < m; ++j)
      CHECK(q[i][j].item<double>() == doctest::Approx(expected[i][j]).epsilon(1e-12));

  // Every image's assignment sums to 1 after any number of iterations; the clusters' totals
  // approach n / m with more iterations.
  const at::Tensor balanced = wb::sinkhorn_knopp(scores, 50, 0.3);
  CHECK(at::allclose(balanced.sum(1), at::ones({n}, at::kDouble), 0, 1e-12));
  const at::Tensor per_cluster = balanced.sum(0) / (double(n) / double(m));
  CHECK((per_cluster - 1).abs().max().item<double>() < 1e-3);
  // One iteration already moves the totals towards balance compared with the plain softmax.
  const at::Tensor raw = at::softmax(scores / 0.3, 1).sum(0) / (double(n) / double(m));
  const at::Tensor one = wb::sinkhorn_knopp(scores, 1, 0.3).sum(0) / (double(n) / double(m));
  CHECK((one - 1).abs().max().item<double>() < (raw - 1).abs().max().item<double>());
  // A tiny epsilon (exponents in the thousands) neither overflows nor underflows.
  const at::Tensor sharp = wb::sinkhorn_knopp(scores, 3, 1e-3);
  CHECK(sharp.isfinite().all().item<bool>());
  CHECK(at::allclose(sharp.sum(1), at::ones({n}, at::kDouble), 0, 1e-9));
}

TEST_CASE("cluster_features: recovers well-separated blobs, unit centroids, balanced sizes") {
  const std::int64_t blobs = 4, per_blob = 30, D = 8;
  at::manual_seed(11);
  // Blob b lies around the b-th basis vector; noise small enough to keep them apart.
  const at::Tensor centres = at::eye(D, at::kFloat).narrow(0, 0, blobs);
  const at::Tensor truth = at::arange(blobs, at::kLong).repeat_interleave(per_blob);
  at::Tensor f = centres.index_select(0, truth) + 0.15 * at::randn({blobs * per_blob, D});
  f = f / f.norm(2, 1, true);
  // Shuffle so that no order of the images helps.
  const at::Tensor perm = at::randperm(blobs * per_blob, at::kLong);
  f = f.index_select(0, perm);
  const at::Tensor label = truth.index_select(0, perm);

  wb::ClusteringOptions o;
  o.clusters = blobs;
  o.batch = 32;
  o.seed = 5;
  const wb::ClusteringResult r = wb::cluster_features(f, o);
  REQUIRE(r.centroids.sizes() == at::IntArrayRef{blobs, D});
  CHECK(at::allclose(r.centroids.norm(2, 1), at::ones({blobs}), 0, 1e-5));
  REQUIRE(r.epoch_loss.size() == 10u);
  CHECK(r.epoch_loss.back() < r.epoch_loss.front());
  // Each cluster holds exactly one blob, and each blob one cluster.
  std::map<std::int64_t, std::set<std::int64_t>> blobs_of_cluster, clusters_of_blob;
  for (std::int64_t i = 0; i < f.size(0); ++i) {
    blobs_of_cluster[r.assignment[i].item<std::int64_t>()].insert(label[i].item<std::int64_t>());
    clusters_of_blob[label[i].item<std::int64_t>()].insert(r.assignment[i].item<std::int64_t>());
  }
  CHECK(blobs_of_cluster.size() == static_cast<std::size_t>(blobs));
  for (const auto& [c, set] : blobs_of_cluster) CHECK(set.size() == 1u);
  for (const auto& [b, set] : clusters_of_blob) CHECK(set.size() == 1u);
  // Each centroid points at its blob's centre: that is its largest coordinate, by far.
  for (const auto& [c, set] : blobs_of_cluster) {
    CHECK(r.centroids[c].argmax().item<std::int64_t>() == *set.begin());
    CHECK(r.centroids[c][*set.begin()].item<float>() > 0.7f);
  }

  // The same seed gives the same clustering; argmax of the scores agrees on separated blobs.
  CHECK(at::equal(wb::cluster_features(f, o).assignment, r.assignment));
  o.assignment = "scores";
  CHECK(at::equal(wb::cluster_features(f, o).assignment, r.assignment));

  o.clusters = blobs * per_blob + 1;
  CHECK_THROWS_WITH_AS(wb::cluster_features(f, o), doctest::Contains("more than the 120"),
                       std::invalid_argument);
  o.clusters = blobs;
  o.assignment = "nearest";
  CHECK_THROWS_WITH_AS(wb::cluster_features(f, o), doctest::Contains("--assignment"),
                       std::invalid_argument);
}

TEST_CASE("clusters.h5: round trip, data identity, another data set refused") {
  wbtest::TempDir dir;
  const wbtest::SyntheticDataset data(wbtest::labels_with_counts({5, 5, 5}), 1, 6);
  wb::DataSettings settings;
  settings.dataset = "idx";
  settings.path = "somewhere";
  const wb::DataIdentity id = wb::data_identity(data, settings);
  CHECK(id.images == 15);
  CHECK(id.fingerprint.size() == 16u);
  CHECK(id.description == "synthetic");
  CHECK(wb::data_identity(data, settings).fingerprint == id.fingerprint);

  wb::ClusterFile file;
  file.centroids = at::randn({3, 4});
  file.assignment =
      at::tensor(std::vector<std::int64_t>{0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2});
  file.data = id;
  file.source_run = "runs/x/abc";
  file.checkpoint_step = 7;
  file.options.clusters = 3;
  file.options.weight_decay = 0.25;
  file.epoch_loss = {2.0, 1.5};
  const auto path = dir.path() / "clusters.h5";
  wb::write_cluster_file(path, file);
  const wb::ClusterFile back = wb::read_cluster_file(path);
  CHECK(at::allclose(back.centroids, file.centroids));
  CHECK(at::equal(back.assignment, file.assignment));
  CHECK(back.data.fingerprint == id.fingerprint);
  CHECK(back.data.settings == id.settings);
  CHECK(back.source_run == "runs/x/abc");
  CHECK(back.checkpoint_step == 7);
  CHECK(back.options.clusters == 3);
  CHECK(back.options.weight_decay == 0.25);
  CHECK(back.epoch_loss == std::vector<double>{2.0, 1.5});
  CHECK_NOTHROW(wb::check_cluster_identity(back, path, id));

  // Same description and count, other labels: the fingerprint tells them apart.
  const wbtest::SyntheticDataset relabelled(wbtest::labels_with_counts({6, 5, 4}), 1, 6);
  const wb::DataIdentity other = wb::data_identity(relabelled, settings);
  CHECK(other.fingerprint != id.fingerprint);
  std::string message;
  try {
    wb::check_cluster_identity(back, path, other);
  } catch (const std::runtime_error& e) {
    message = e.what();
  }
  CHECK(message.find("clusters another data set") != std::string::npos);
  CHECK(message.find(id.fingerprint) != std::string::npos);
  CHECK(message.find(other.fingerprint) != std::string::npos);
  CHECK(message.find(path.string()) != std::string::npos);
  const wbtest::SyntheticDataset fewer(wbtest::labels_with_counts({5, 5, 4}), 1, 6);
  CHECK_THROWS_WITH_AS(wb::check_cluster_identity(back, path, wb::data_identity(fewer, settings)),
                       doctest::Contains("(14 images"), std::runtime_error);

  CHECK_THROWS_WITH_AS(wb::read_cluster_file(dir.path() / "none.h5"),
                       doctest::Contains("no such cluster file"), std::runtime_error);
}

TEST_CASE("data.clusters: [data] only, part of the id only when set, init.expert_noise likewise") {
  const std::string base = R"(
[backbone]
plugin = "vit"
[[losses]]
plugin = "classify"
)";
  try {
    wb::parse_run_config(base + "[datasets.t]\nclusters = \"x.h5\"\n", "f.toml",
                         wb_test::plugins());
    FAIL("expected a ConfigError");
  } catch (const wb::ConfigError& e) {
    CHECK(e.file == "f.toml");
    CHECK(e.line == 7);
    CHECK(std::string(e.what()).find("datasets.t.clusters") != std::string::npos);
  }
  const wb::RunConfig plain = wb::parse_run_config(base, "f.toml", wb_test::plugins());
  CHECK(plain.toml.find("clusters") == std::string::npos);
  const wb::RunConfig with =
      wb::parse_run_config(base + "[data]\nclusters = \"runs/x\"\n", "f.toml", wb_test::plugins());
  CHECK(with.toml.find("clusters = \"runs/x\"") != std::string::npos);
  CHECK(with.settings.data.clusters == "runs/x");
  CHECK(with.id != plain.id);

  const wb::RunConfig init =
      wb::parse_run_config(base + "[init]\nfrom = \"runs/x\"\n", "f.toml", wb_test::plugins());
  CHECK(init.toml.find("expert_noise") == std::string::npos);
  CHECK(init.init.real("expert_noise") == 0.01);
  const wb::RunConfig noisy = wb::parse_run_config(
      base + "[init]\nfrom = \"runs/x\"\nexpert_noise = 0.1\n", "f.toml", wb_test::plugins());
  CHECK(noisy.toml.find("expert_noise = 0.1") != std::string::npos);
  CHECK(noisy.id != init.id);
}
