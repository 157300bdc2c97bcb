// `workbench cluster` end to end and the cluster ids in a MoCE run: a dense ViT trained a few
// steps on 200 Fashion-MNIST images, its training set clustered (clusters.h5 with the data
// set's identity), a MoE run with the `cluster` gate and the `imbalance` loss trained on those
// clusters, and a run on another subset refused with both identities named.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "built_plugins.h"
#include "cluster/cluster_file.h"
#include "cluster/trained_run.h"
#include "config/run_config.h"
#include "e2e_fixture.h"
#include "h5/metrics.h"
#include "store/status.h"
#include "test_data_helpers.h"
#include "train/data_access.h"

namespace fs = std::filesystem;
using wbtest::only_run;
using wbtest::slurp;
using wbtest::workbench;

namespace {

// An experiment of one point on the first `limit` training images; `data` goes into
// [base.data], `extra` is appended (backbone, gate, losses).
fs::path experiment(const fs::path& dir, const std::string& name, int limit,
                    const std::string& data, const std::string& extra) {
  return wbtest::write_experiment(dir, name,
                                  wbtest::fashion_base(limit, 50, data) +
                                      "[base.train]\nepochs = 1\nbatch = 50\nwarmup_epochs = 0\n",
                                  extra);
}

const std::string kVit = wbtest::small_vit("base.backbone", 2);

}  // namespace

TEST_CASE(
    "workbench cluster, then a cluster-gated run on those clusters, another data set refused") {
  REQUIRE_MESSAGE(fs::exists(wbtest::kFashion),
                  "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  wbtest::TempDir dir;
  const std::string runs = " --runs-dir " + (dir.path() / "runs").string() + " --no-report";
  auto [code, out] = workbench("run " +
                                   experiment(dir.path(), "dense", 200, "", kVit + R"(
[[base.losses]]
plugin = "classify"
)")
                                       .string() +
                                   runs,
                               dir.path());
  REQUIRE_MESSAGE(code == 0, out);
  const fs::path dense = only_run(dir.path() / "runs" / "dense");

  std::tie(code, out) = workbench(
      "cluster " + dense.string() + " --clusters 4 --epochs 3 --batch 50 --threads 1", dir.path());
  REQUIRE_MESSAGE(code == 0, out);
  const wb::ClusterFile clusters = wb::read_cluster_file(dense / "clusters.h5");
  CHECK(clusters.centroids.sizes() == at::IntArrayRef{4, 16});
  CHECK(at::allclose(clusters.centroids.norm(2, 1), at::ones({4}), 0, 1e-5));
  REQUIRE(clusters.assignment.size(0) == 200);
  CHECK(clusters.assignment.min().item<std::int64_t>() >= 0);
  CHECK(clusters.assignment.max().item<std::int64_t>() < 4);
  CHECK(clusters.options.epochs == 3);
  CHECK(clusters.epoch_loss.size() == 3u);
  CHECK(clusters.checkpoint_step == 4);
  // The identity is that of the run's own training set.
  wb::DataSettings data;
  data.dataset = "fashion_mnist";
  data.train_limit = 200;
  data.test_limit = 50;
  const wb::DataIdentity id = wb::data_identity(*wb::open_data(data, wb::Split::Train), data);
  CHECK(clusters.data.fingerprint == id.fingerprint);
  CHECK(clusters.data.images == 200);
  CHECK(clusters.data.description == id.description);
  // The features came through the evaluation cache of the run.
  CHECK(fs::exists(dense / "eval" / "features_train_data_train_step4.pt"));

  const std::string moce = kVit + R"(experts = 2
moe_blocks = [1]
expert_ratio = 4.0

[base.datasets.down]
dataset = "fashion_mnist"
classes = [0, 1]
train_limit = 300
test_limit = 50

[base.gate]
plugin = "cluster"

[[base.losses]]
plugin = "classify"

[[base.losses]]
plugin = "imbalance"

[[base.evaluators]]
plugin = "routing_map"
)";
  const std::string with_clusters = "clusters = \"" + dense.string() + "\"\n";
  std::tie(code, out) =
      workbench("run " + experiment(dir.path(), "moce", 200, with_clusters, moce).string() + runs,
                dir.path());
  REQUIRE_MESSAGE(code == 0, out);
  const fs::path run = only_run(dir.path() / "runs" / "moce");
  CHECK(wb::read_status(run / "status.toml").state == wb::RunState::Done);
  CHECK(slurp(run / "run.log").find("clusters: ") != std::string::npos);
  const auto series = wb::MetricsReader(run / "metrics.h5").series_names();
  CHECK(std::find(series.begin(), series.end(), "loss/imbalance/imbalance") != series.end());
  // The evaluators of the cluster-gated model itself: its test images got cluster ids.
  CHECK(wb::MetricsReader(run / "metrics.h5").eval().at("routing_map").count("fraction") == 1);
  CHECK(slurp(run / "run.log").find("nearest centroid") != std::string::npos);

  // `workbench eval --add` on the run directory, on the clustered training set: its stored
  // assignment routes every image, so the map follows from the clusters and the gate alone.
  std::tie(code, out) =
      workbench("eval " + run.string() +
                    " --threads 1 --add '{ plugin = \"routing_map\", split = \"train\" }'",
                dir.path());
  REQUIRE_MESSAGE(code == 0, out);
  {
    const wb::TrainedRun moce = wb::open_trained_run(run, wb_test::plugins());
    auto params = moce.model.backbone->named_parameters();
    auto buffers = moce.model.backbone->named_buffers();
    const at::Tensor expert_of =
        buffers["block1.moe.gate.centroids"].mm(params["block1.moe.gate.weight"].t()).argmax(1);
    const auto train = wb::open_data(moce.config.settings.data, wb::Split::Train);
    at::Tensor expected = at::zeros({2, 10}, at::kDouble), per_class = at::zeros({10}, at::kDouble);
    for (std::int64_t i = 0; i < train->size(); ++i) {
      const std::int64_t c = clusters.assignment[i].item<std::int64_t>();
      expected[expert_of[c].item<std::int64_t>()][train->label(i)].add_(1);
      per_class[train->label(i)].add_(1);
    }
    expected = (expected / per_class.clamp_min(1)).flatten().contiguous();
    const std::vector<double> fraction =
        wb::MetricsReader(run / "metrics.h5").eval().at("routing_map_2").at("fraction");
    REQUIRE(fraction.size() == 20u);
    for (std::size_t k = 0; k < fraction.size(); ++k)
      CHECK(fraction[k] == doctest::Approx(expected[static_cast<std::int64_t>(k)].item<double>()));
  }

  // Deployment: the downstream set through the dense run's features, its largest cluster's
  // expert path as a dense run directory that `workbench eval` takes as it is.
  std::tie(code, out) =
      workbench("deploy " + run.string() + " --data down --threads 1", dir.path());
  REQUIRE_MESSAGE(code == 0, out);
  const fs::path deployed = run.parent_path() / (run.filename().string() + "-deploy-down");
  const std::string info = slurp(deployed / "deploy.toml");
  CHECK(info.find("cluster = ") != std::string::npos);
  CHECK(info.find("data_images = ") != std::string::npos);
  const wb::RunConfig dense_config =
      wb::load_run_config(deployed / "config.toml", wb_test::plugins());
  CHECK(dense_config.backbone.params.integer("experts") == 0);
  CHECK(dense_config.gate.plugin.empty());
  CHECK(wb::read_status(deployed / "status.toml").state == wb::RunState::Done);
  std::tie(code, out) = workbench(
      "eval " + deployed.string() + " --threads 1 --add '{ plugin = \"knn\", k = 5 }'", dir.path());
  REQUIRE_MESSAGE(code == 0, out);
  CHECK(wb::MetricsReader(deployed / "metrics.h5").eval().at("knn").count("top1") == 1);
  std::tie(code, out) = workbench("deploy " + run.string() + " --data nowhere", dir.path());
  CHECK(code == 2);
  CHECK(out.find("no [datasets.nowhere]") != std::string::npos);

  std::tie(code, out) =
      workbench("run " + experiment(dir.path(), "other", 150, with_clusters, moce).string() + runs,
                dir.path());
  CHECK(code != 0);
  const std::string log = slurp(only_run(dir.path() / "runs" / "other") / "run.log");
  CHECK_MESSAGE(log.find("clusters another data set") != std::string::npos, log);
  CHECK(log.find("(200 images") != std::string::npos);
  CHECK(log.find("(150 images") != std::string::npos);
}
