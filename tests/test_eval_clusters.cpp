// Cluster ids for the evaluation sets of a cluster-gated (MoCE) run (docs/moce.md): every data
// set an evaluator reads gets the nearest centroid under the features of the run the clustering
// was made from (checked against F C^T computed here from hand-built input tensors), the
// clustered training set keeps its stored assignment, the ids reach the batches (also through
// subsets), routing_map of the MoCE model is the map its clusters' experts give, and a source run
// that is gone is named in the error.
#include <doctest/doctest.h>

#include <ATen/ATen.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "built_plugins.h"
#include "cluster/cluster_file.h"
#include "dist/communicator.h"
#include "eval/context.h"
#include "fixture_toml.h"
#include "test_data_helpers.h"
#include "train/checkpoint.h"
#include "train/data_access.h"
#include "workbench/eval_tools.h"

namespace fs = std::filesystem;

namespace {

using wb_test::plugins;

using wbtest::kFashion;

const char* kData = R"(
threads = 1
workers = 0
device = "cpu"
[data]
dataset = "fashion_mnist"
train_limit = 60
test_limit = 40
)";

const char* kTransfer = R"(
[datasets.transfer]
dataset = "fashion_mnist"
classes = [5, 6, 7]
train_limit = 200
test_limit = 100
)";

// The CLS features (unit length) of every image of `data` under `backbone`, from input tensors
// built here: the eval view at the data set's own size is the image, normalised with the data
// set's statistics.
at::Tensor hand_features(wb::Backbone& backbone, const wb::Dataset& data) {
  const std::int64_t n = data.size(), C = data.channels(), S = data.image_size();
  const std::vector<double> mean = data.pixel_mean(), stdev = data.pixel_std();
  at::Tensor x = at::empty({n, C, S, S});
  auto a = x.accessor<float, 4>();
  for (std::int64_t i = 0; i < n; ++i) {
    const wb::Image image = data.image(i);
    REQUIRE(image.height == S);
    for (std::int64_t h = 0; h < S; ++h)
      for (std::int64_t w = 0; w < S; ++w)
        for (std::int64_t c = 0; c < C; ++c) {
          const double v = image.pixels[static_cast<std::size_t>((h * S + w) * C + c)] / 255.0;
          a[i][c][h][w] = static_cast<float>((v - mean[static_cast<std::size_t>(c)]) /
                                             stdev[static_cast<std::size_t>(c)]);
        }
  }
  at::NoGradGuard no_grad;
  backbone.eval();
  wb::RoutingContext rc;
  rc.training = false;
  rc.view = at::zeros({n}, at::kLong);
  const at::Tensor f = backbone.forward(x, rc).cls;
  return f / f.norm(2, 1, true);
}

std::vector<std::int64_t> ids_of(const wb::Dataset& data) {
  REQUIRE(data.has_clusters());
  std::vector<std::int64_t> ids;
  for (std::int64_t i = 0; i < data.size(); ++i) ids.push_back(data.cluster(i));
  return ids;
}

std::vector<std::int64_t> vec(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kLong).contiguous();
  return {c.data_ptr<std::int64_t>(), c.data_ptr<std::int64_t>() + c.numel()};
}

// The images whose id is not the argmax of their row of scores [n, m]. A near tie (the two best
// scores within 1e-5, where float rounding of another batch size may decide) accepts either.
std::vector<std::int64_t> not_argmax(const std::vector<std::int64_t>& ids,
                                     const at::Tensor& scores) {
  REQUIRE(static_cast<std::int64_t>(ids.size()) == scores.size(0));
  std::vector<std::int64_t> wrong;
  for (std::int64_t i = 0; i < scores.size(0); ++i) {
    const at::Tensor row = scores[i].to(at::kDouble);
    const double best = row.max().item<double>();
    const double mine = row[ids[static_cast<std::size_t>(i)]].item<double>();
    const bool tie = std::get<0>(at::topk(row, 2))[1].item<double>() > best - 1e-5;
    if (mine != best && !(tie && mine > best - 1e-5)) wrong.push_back(i);
  }
  return wrong;
}

// A dense source run on disk (config.toml, checkpoints/last.pt), its clustering of the
// training set (3 centroids, a stored assignment that is NOT the nearest centroid), and a
// cluster-gated MoE model built on that clustering.
struct MoceFixture {
  wbtest::TempDir dir;
  fs::path source_dir, cluster_file;
  wb::RunConfig source_config, moce_config;
  std::unique_ptr<wb::Communicator> comm = wb::make_single_process_communicator();
  wb::Model source, moce;
  wb::ClusterFile clusters;
  std::shared_ptr<spdlog::logger> log =
      std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>());

  MoceFixture() {
    source_dir = dir.path() / "source";
    fs::create_directories(source_dir / "checkpoints");
    const std::string source_toml = std::string(kData) + kTransfer + "\n" +
                                    wbtest::small_vit("backbone", 2) +
                                    "[[losses]]\nplugin = \"classify\"\n";
    std::ofstream(source_dir / "config.toml") << source_toml;
    source_config = wb::parse_run_config(source_toml, "source", plugins());
    const auto train = wb::open_data(source_config.settings.data, wb::Split::Train);
    const wb::DataShape shape{train->channels(), train->image_size(), train->classes()};
    at::manual_seed(5);
    source = wb::build_model(source_config, plugins(), shape, comm.get());
    wb::CheckpointState state = wb::checkpoint_state(source);
    state.step = 7;
    wb::save_checkpoint(source_dir / "checkpoints" / "last.pt", state);

    // Centroids at the features of three training images of different classes: the images
    // of a set spread over them (random directions could all lie on one side of the features).
    const at::Tensor features = hand_features(*source.backbone, *train);
    std::vector<std::int64_t> picks;
    for (std::int64_t i = 0; i < train->size() && picks.size() < 3; ++i) {
      bool new_class = true;
      for (const auto j : picks) new_class = new_class && train->label(j) != train->label(i);
      if (new_class) picks.push_back(i);
    }
    clusters.centroids = features.index_select(0, at::tensor(picks, at::kLong)).contiguous();
    std::vector<std::int64_t> stored;
    for (std::int64_t i = 0; i < train->size(); ++i) stored.push_back((i * 7 + 1) % 3);
    clusters.assignment = at::tensor(stored, at::TensorOptions().dtype(at::kLong));
    clusters.data = wb::data_identity(*train, source_config.settings.data);
    clusters.source_run = fs::absolute(source_dir).string();
    clusters.checkpoint_step = 7;
    clusters.epoch_loss = {1.0};
    cluster_file = dir.path() / "clusters.h5";
    wb::write_cluster_file(cluster_file, clusters);

    moce_config = moce_on(cluster_file);
    at::manual_seed(8);
    moce = wb::build_model(moce_config, plugins(), shape, comm.get());
    moce.train(false);
  }

  // The MoE run's configuration on the clustering in `file`: 3 experts in block 1, the cluster
  // gate with large logits (every cluster has a clear expert).
  wb::RunConfig moce_on(const fs::path& file) const {
    const std::string toml =
        std::string(kData) + "clusters = \"" + file.string() + "\"\n" + kTransfer + "\n" +
        wbtest::small_vit("backbone", 2, "experts = 3\nmoe_blocks = [1]\nexpert_ratio = 4.0\n") +
        wbtest::kClusterGateClassify;
    return wb::parse_run_config(toml, "moce", plugins());
  }

  std::unique_ptr<wb::RunEvalContext> context(const wb::RunConfig& config) {
    return std::make_unique<wb::RunEvalContext>(config, plugins(), moce, c10::Device(c10::kCPU), 1,
                                                dir.path() / "eval", *log, "step7");
  }

  // The scores F C^T [n, m] of every image of a data set opened here with the source's
  // settings.
  at::Tensor scores(const std::string& name, wb::Split split) const {
    const wb::DataSettings& settings =
        name.empty() ? source_config.settings.data : source_config.settings.datasets.at(name);
    const auto data = wb::open_data(settings, split);
    return hand_features(*source.backbone, *data).mm(clusters.centroids.t());
  }
};

}  // namespace

TEST_CASE(
    "eval cluster ids: nearest centroid of the source's features, stored for the clustered set") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  MoceFixture f;
  auto ctx = f.context(f.moce_config);

  const auto transfer_test = ctx->dataset("transfer", wb::Split::Test);
  const std::vector<std::int64_t> expected = ids_of(*transfer_test);
  CHECK(not_argmax(expected, f.scores("transfer", wb::Split::Test)).empty());
  CHECK(not_argmax(ids_of(*ctx->dataset("transfer", wb::Split::Train)),
                   f.scores("transfer", wb::Split::Train))
            .empty());
  CHECK(not_argmax(ids_of(*ctx->dataset("", wb::Split::Test)), f.scores("", wb::Split::Test))
            .empty());
  // The ids are not all the same (the checks above would pass a constant only by chance).
  CHECK(std::set<std::int64_t>(expected.begin(), expected.end()).size() >= 2);

  // The clustered training set keeps its stored assignment, which is not the nearest centroid.
  const std::vector<std::int64_t> stored = vec(f.clusters.assignment);
  CHECK(ids_of(*ctx->dataset("", wb::Split::Train)) == stored);
  CHECK(not_argmax(stored, f.scores("", wb::Split::Train)).size() > 10);

  // Once per data set: the same object again.
  CHECK(ctx->dataset("transfer", wb::Split::Test).get() == transfer_test.get());
  // The data set is otherwise the one opened.
  const auto opened =
      wb::open_data(f.moce_config.settings.datasets.at("transfer"), wb::Split::Test);
  CHECK(transfer_test->size() == opened->size());
  CHECK(transfer_test->describe() == opened->describe());
  for (std::int64_t i = 0; i < opened->size(); ++i)
    CHECK(transfer_test->label(i) == opened->label(i));

  // The ids reach the batches, in item order, and subsets keep them.
  wb::LoaderOptions options = ctx->loader_options();
  options.shuffle = false;
  options.drop_last = false;
  options.batch_size = 16;
  wb::Loader loader(transfer_test, {ctx->recipe("eval")}, options);
  std::vector<std::int64_t> batched;
  while (auto batch = loader.next()) {
    REQUIRE(batch->cluster.defined());
    const auto ids = vec(batch->cluster);
    batched.insert(batched.end(), ids.begin(), ids.end());
  }
  CHECK(batched == expected);
  const auto part = wb::subset(transfer_test, {9, 2, 15}, "three");
  CHECK(ids_of(*part) == std::vector<std::int64_t>{expected[9], expected[2], expected[15]});
}

TEST_CASE("routing_map of a cluster-gated model: every image's tokens go to its cluster's expert") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  MoceFixture f;
  auto ctx = f.context(f.moce_config);

  // The expert of every cluster, from the gate's weights and centroids: argmax of W_g C[c].
  const auto params = f.moce.backbone->named_parameters();
  const auto buffers = f.moce.backbone->named_buffers();
  const at::Tensor expert_of =
      buffers["block1.moe.gate.centroids"].mm(params["block1.moe.gate.weight"].t()).argmax(1);

  for (const std::string split : {"test", "train"}) {
    CAPTURE(split);
    // The ids the evaluator gets: the nearest centroid (test), the stored assignment (train).
    const std::vector<std::int64_t> ids = ids_of(*ctx->dataset("", wb::split_named(split)));
    if (split == "test")
      CHECK(not_argmax(ids, f.scores("", wb::Split::Test)).empty());
    else
      CHECK(ids == vec(f.clusters.assignment));
    const auto data = wb::open_data(f.moce_config.settings.data, wb::split_named(split));
    const std::int64_t classes = data->classes(), E = 3;
    at::Tensor expected = at::zeros({1, E, classes}, at::kDouble);
    at::Tensor per_class = at::zeros({classes}, at::kDouble);
    for (std::int64_t i = 0; i < data->size(); ++i) {
      const std::int64_t e = expert_of[ids[static_cast<std::size_t>(i)]].item<std::int64_t>();
      expected[0][e][data->label(i)].add_(1);
      per_class[data->label(i)].add_(1);
    }
    expected = expected / per_class.clamp_min(1).view({1, 1, classes});

    wb::Params p = plugins().defaults(wb::Kind::Evaluator, "routing_map");
    p.set("split", split);
    const wb::EvalResult r = plugins().make_evaluator("routing_map", p)->evaluate(*ctx);
    const at::Tensor fraction = r.arrays.at("fraction");
    REQUIRE(fraction.sizes() == expected.sizes());
    CHECK(at::allclose(fraction, expected, 0, 1e-12));
  }
}

TEST_CASE("eval cluster ids: a clustering whose source run is gone is named with the run") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  MoceFixture f;
  wb::ClusterFile moved = f.clusters;
  const fs::path gone = f.dir.path() / "moved_away";
  moved.source_run = gone.string();
  const fs::path file = f.dir.path() / "moved_clusters.h5";
  wb::write_cluster_file(file, moved);
  const wb::RunConfig config = f.moce_on(file);  // the context keeps a reference
  auto ctx = f.context(config);
  // The clustered set needs no features: its stored assignment.
  CHECK(ids_of(*ctx->dataset("", wb::Split::Train)) == vec(f.clusters.assignment));
  try {
    ctx->dataset("transfer", wb::Split::Test);
    FAIL("a missing source run was not noticed");
  } catch (const std::exception& e) {
    const std::string message = e.what();
    CHECK_MESSAGE(message.find(gone.string()) != std::string::npos, message);
    CHECK_MESSAGE(message.find(file.string()) != std::string::npos, message);
    CHECK_MESSAGE(message.find("not found") != std::string::npos, message);
  }
}
