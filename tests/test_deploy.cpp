// MoCE's deployment (docs/methods.md §8): the dense twin of one cluster's expert path computes
// what the cluster-gated MoE model computes for images of that cluster (float64, 1e-6), has the
// parameters of a dense ViT (the experts and gates of the others gone), and its experts are the
// gate's top-1 for that cluster's centroid.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include "built_plugins.h"
#include "cluster/cluster_file.h"
#include "cluster/deploy.h"
#include "dist/communicator.h"
#include "fixture_toml.h"
#include "test_data_helpers.h"

namespace fs = std::filesystem;

namespace {

using wb_test::plugins;

std::int64_t count_parameters(torch::nn::Module& m) {
  std::int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace

TEST_CASE("deploy: the dense expert path equals the MoE model on its cluster's images") {
  wbtest::TempDir dir;
  const std::int64_t m = 4, Dc = 6, D = 8, H = 32, E = 3;
  at::manual_seed(1);
  wb::ClusterFile clusters;
  clusters.centroids = at::randn({m, Dc});
  clusters.centroids = clusters.centroids / clusters.centroids.norm(2, 1, true);
  clusters.assignment = at::zeros({2}, at::kLong);
  clusters.data.images = 2;
  clusters.data.description = "two images";
  clusters.data.fingerprint = "0000000000000000";
  clusters.source_run = "nowhere";
  clusters.epoch_loss = {1.0};
  const fs::path file = dir.path() / "clusters.h5";
  wb::write_cluster_file(file, clusters);

  const std::string toml = R"(
[data]
clusters = ")" + file.string() +
                           R"("
[backbone]
plugin = "vit"
dim = 8
depth = 3
heads = 2
patch = 4
experts = 3
moe_blocks = [1, 2]
expert_ratio = 4.0
)" + wbtest::kClusterGateClassify +
                           "[[losses]]\nplugin = \"imbalance\"\n";
  const wb::RunConfig config = wb::parse_run_config(toml, "test", plugins());
  auto comm = wb::make_single_process_communicator();
  const wb::DataShape shape{1, 8, 10};
  wb::Model moe = wb::build_model(config, plugins(), shape, comm.get());
  moe.backbone->to(at::kDouble);
  for (auto& l : moe.losses) l->to(at::kDouble);
  const auto named = moe.backbone->named_parameters();
  const auto buffers = moe.backbone->named_buffers();

  const at::Tensor images = at::randn({5, 1, 8, 8}, at::kDouble);
  for (const std::int64_t cluster : {std::int64_t{0}, std::int64_t{3}}) {
    CAPTURE(cluster);
    wb::ExpertPath path = wb::expert_path(config, moe, cluster, plugins(), shape, true);
    // The experts are the gate's top-1 for the centroid, per layer, by hand.
    REQUIRE(path.experts.size() == 2u);
    for (std::size_t l = 0; l < 2; ++l) {
      const std::string block = "block" + std::to_string(l + 1) + ".moe.gate.";
      const at::Tensor logits =
          buffers[block + "centroids"][cluster].to(at::kDouble).matmul(named[block + "weight"].t());
      CHECK(path.experts[l] == logits.argmax().item<std::int64_t>());
      CHECK(path.gate_weights[l] ==
            doctest::Approx(at::softmax(logits, 0).max().item<double>()).epsilon(1e-9));
    }
    CHECK(path.config.backbone.params.integer("experts") == 0);
    CHECK(path.config.gate.plugin.empty());
    CHECK(path.config.settings.data.clusters.empty());
    CHECK(path.model.backbone->moe_blocks().empty());

    at::NoGradGuard no_grad;
    moe.backbone->eval();
    path.model.backbone->eval();
    wb::RoutingContext rc;
    rc.training = false;
    rc.view = at::zeros({5}, at::kLong);
    rc.cluster = at::full({5}, cluster, at::kLong);
    const wb::BackboneOutput a = moe.backbone->forward(images, rc);
    rc.cluster = at::Tensor();
    const wb::BackboneOutput b = path.model.backbone->forward(images, rc);
    REQUIRE((b.cls.scalar_type() == at::kDouble));
    CHECK(at::allclose(a.cls, b.cls, 0, 1e-6));
    CHECK(at::allclose(a.patches, b.patches, 0, 1e-6));
    CHECK(b.routings.empty());

    // Parameters: the MoE model's, less per MoE layer the other E - 1 experts and the gate.
    const std::int64_t expert = D * H + H + H * D + D;
    const std::int64_t expected = count_parameters(*moe.backbone) - 2 * ((E - 1) * expert + E * Dc);
    CHECK(count_parameters(*path.model.backbone) == expected);
    CHECK(path.model.backbone->cost().parameters == expected);
    // The classifier head came along.
    CHECK(at::equal(path.model.losses[0]->parameters()[0], moe.losses[0]->parameters()[0]));

    // Without folding, the expert is kept as trained: the output differs by the gate weight.
    wb::ExpertPath raw = wb::expert_path(config, moe, cluster, plugins(), shape, false);
    raw.model.backbone->eval();
    CHECK_FALSE(at::allclose(raw.model.backbone->forward(images, rc).cls, a.cls, 0, 1e-6));
  }
}
