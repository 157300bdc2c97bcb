// Stages of an experiment file (docs/design.md, "Stages"): [stage.NAME] tables run in the order
// of their dependencies, a later stage names an earlier one's point with "@NAME" (same seed,
// same values of the keys both vary), the resolved run directory is part of the later point's
// id, an unknown stage or a cycle is refused at the line; end to end, a dense MAE, its
// clustering, a MoCE started from both and its deployment chain from one file.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>

#include "built_plugins.h"
#include "checkpoint_tensors.h"
#include "config/experiment.h"
#include "e2e_fixture.h"
#include "h5/metrics.h"
#include "store/status.h"
#include "test_data_helpers.h"

namespace fs = std::filesystem;
using wbtest::kFashion;
using wbtest::slurp;
using wbtest::workbench;

namespace {

int line_of(const std::string& text, const std::string& needle) {
  const std::size_t at = text.find(needle);
  REQUIRE(at != std::string::npos);
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + static_cast<long>(at), '\n'));
}

// A tiny dense MAE, its clustering, a MoCE from both, the MoCE's deployment.
const std::string kStages =
    wbtest::experiment_text("chain",
                            wbtest::fashion_base(128, 64, R"([base.datasets.transfer]
dataset = "fashion_mnist"
classes = [5, 6, 7, 8, 9]
train_limit = 128
test_limit = 64
)") + wbtest::views("mae") + wbtest::small_vit("base.backbone", 2) +
                                wbtest::kSmallMae +
                                "[base.train]\nbatch = 32\nepochs = 1\nwarmup_epochs = 0\n",
                            R"([stage.mae]
base = { evaluators = [] }

[stage.clusters]
kind = "cluster"
from = "@mae"
clusters = 4
epochs = 2
batch = 64

[stage.moce]
[stage.moce.base]
"data.clusters" = "@clusters"
"init.from" = "@mae"
"init.allow_missing" = ["block*.moe.gate.*"]
"backbone.experts" = 2
"backbone.moe_blocks" = [1]
"backbone.expert_ratio" = 4.0
"train.base_lr" = 1e-9
gate = "cluster"
evaluators = []

[stage.deploy]
kind = "deploy"
from = "@moce"
data = "transfer"
[[stage.deploy.evaluators]]
plugin = "knn"
)",
                            "[0, 1]");

}  // namespace

TEST_CASE("stages: order, references resolved to the earlier point of the same seed, ids chain") {
  const wb::Experiment e = wb::parse_experiment(kStages, "chain.toml", wb_test::plugins());
  REQUIRE(e.stages.size() == 4);
  CHECK(e.stages[0].name == "mae");
  CHECK(e.stages[1].name == "clusters");
  CHECK(e.stages[1].after == std::vector<std::string>{"mae"});
  CHECK(e.stages[2].name == "moce");
  CHECK(e.stages[2].after == std::vector<std::string>({"clusters", "mae"}));
  REQUIRE(e.points.size() == 8);  // 4 stages x 2 seeds
  std::map<std::string, std::vector<const wb::Point*>> by_stage;
  for (const auto& p : e.points) by_stage[p.stage].push_back(&p);
  for (int s = 0; s < 2; ++s) {
    const wb::Point& mae = *by_stage["mae"][s];
    const wb::Point& clusters = *by_stage["clusters"][s];
    const wb::Point& moce = *by_stage["moce"][s];
    const wb::Point& deploy = *by_stage["deploy"][s];
    CHECK(mae.seed == s);
    CHECK(clusters.seed == s);
    CHECK(clusters.kind == "cluster");
    CHECK(clusters.needs == std::vector<std::string>{mae.id});
    CHECK(clusters.task.find("source = \"runs/chain/" + mae.id + "\"") != std::string::npos);
    CHECK(clusters.task.find("clusters = 4") != std::string::npos);
    CHECK(clusters.task.find("seed = " + std::to_string(s)) != std::string::npos);
    CHECK(moce.seed == s);
    CHECK(moce.config.init.text("from") == "runs/chain/" + mae.id);
    CHECK(moce.config.settings.data.clusters == "runs/chain/" + clusters.id);
    CHECK(moce.needs == std::vector<std::string>({clusters.id, mae.id}));
    CHECK(deploy.needs == std::vector<std::string>{moce.id});
    CHECK(deploy.task.find("data = \"transfer\"") != std::string::npos);
    CHECK(deploy.task.find("knn") != std::string::npos);
  }
  CHECK(by_stage["mae"][0]->id != by_stage["mae"][1]->id);

  // Changing the MAE stage changes every id downstream; --runs-dir moves the references.
  std::string other = kStages;
  other.replace(other.find("epochs = 1\n"), 11, "epochs = 2\n");
  const wb::Experiment f = wb::parse_experiment(other, "chain.toml", wb_test::plugins());
  for (std::size_t i = 0; i < e.points.size(); ++i) CHECK(e.points[i].id != f.points[i].id);
  wb::ExperimentOptions elsewhere;
  elsewhere.runs_dir = "/tmp/x/";
  const wb::Experiment g =
      wb::parse_experiment(kStages, "chain.toml", wb_test::plugins(), elsewhere);
  CHECK(g.points[0].id == e.points[0].id);
  CHECK(g.points[4].config.init.text("from") == "/tmp/x/chain/" + e.points[0].id);

  const std::string table = wb::format_points_table(e);
  CHECK(table.find("stage moce (train, after clusters, mae): 2 points") != std::string::npos);
  CHECK(table.find("8 points in 4 stages") != std::string::npos);
}

TEST_CASE("stages: a later stage's grid key picks the earlier point with the same value") {
  std::string text = kStages;
  // Two MAE points per seed (two mask ratios) and a MoCE grid over the same key.
  text.replace(text.find("[stage.mae]\n"), 12,
               "[stage.mae]\ngrid = { \"losses.mae.mask_ratio\" = [0.5, 0.75] }\n");
  text.replace(text.find("[stage.moce.base]\n"), 18,
               "[stage.moce.grid]\n\"losses.mae.mask_ratio\" = [0.75, 0.5]\n[stage.moce.base]\n");
  const wb::Experiment e = wb::parse_experiment(text, "chain.toml", wb_test::plugins());
  for (const auto& p : e.points) {
    if (p.stage != "moce") continue;
    const std::string ratio = p.assignments.front().second;
    bool found = false;
    for (const auto& q : e.points)
      if (q.stage == "mae" && q.seed == p.seed && q.assignments.front().second == ratio) {
        CHECK(p.config.init.text("from") == "runs/chain/" + q.id);
        found = true;
      }
    CHECK(found);
  }
  // Without the MoCE grid the reference is ambiguous: refused at the reference.
  std::string ambiguous = kStages;
  ambiguous.replace(ambiguous.find("[stage.mae]\n"), 12,
                    "[stage.mae]\ngrid = { \"losses.mae.mask_ratio\" = [0.5, 0.75] }\n");
  ambiguous.replace(ambiguous.find("[stage.clusters]"), 0, "");
  ambiguous.replace(ambiguous.find("from = \"@mae\""), 13, "from = \"@moce\"");
  ambiguous.replace(ambiguous.find("\"data.clusters\" = \"@clusters\"\n"), 30, "");
  try {
    wb::parse_experiment(ambiguous, "chain.toml", wb_test::plugins());
    FAIL("an ambiguous reference was accepted");
  } catch (const wb::ConfigError& err) {
    CHECK(err.line == line_of(ambiguous, "\"init.from\" = \"@mae\""));
    CHECK(std::string(err.what()).find("ambiguous") != std::string::npos);
  }
}

TEST_CASE("stages: an unknown stage, a cycle, a grid outside the stages are refused at the line") {
  auto refused = [](const std::string& text, const std::string& at, const std::string& words) {
    try {
      wb::parse_experiment(text, "chain.toml", wb_test::plugins());
      FAIL("accepted: " << at);
    } catch (const wb::ConfigError& err) {
      INFO(err.what());
      CHECK(err.file == "chain.toml");
      CHECK(err.line == line_of(text, at));
      CHECK(std::string(err.what()).find(words) != std::string::npos);
    }
  };
  std::string unknown = kStages;
  unknown.replace(unknown.find("\"init.from\" = \"@mae\""), 20, "\"init.from\" = \"@maee\"");
  refused(unknown, "\"init.from\" = \"@maee\"", "unknown stage 'maee'; did you mean 'mae'?");

  std::string cycle = kStages;
  cycle.replace(cycle.find("base = { evaluators = [] }"), 26, "after = \"moce\"");
  refused(cycle, "after = \"moce\"", "cycle: mae -> moce -> clusters -> mae");

  std::string self = kStages;
  self.replace(self.find("base = { evaluators = [] }"), 26, "base = { \"init.from\" = \"@mae\" }");
  refused(self, "base = { \"init.from\"", "cycle: mae -> mae");

  refused(kStages + "[grid]\n\"train.epochs\" = [1, 2]\n", "[grid]", "[stage.NAME.grid]");

  std::string data = kStages;
  data.replace(data.find("data = \"transfer\""), 17, "data = \"downstream\"");
  refused(data, "data = \"downstream\"", "not a [datasets.downstream]");

  std::string key = kStages;
  key.replace(key.find("clusters = 4"), 12, "clusterz = 4");
  refused(key, "clusterz = 4", "did you mean 'clusters'?");
}

TEST_CASE("workbench run: MAE -> clustering -> MoCE -> deployment from one file, in order") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  wbtest::TempDir dir;
  std::string text = kStages;
  text.replace(text.find("seeds = [0, 1]"), 14, "seeds = [0]");
  std::ofstream(dir.path() / "chain.toml") << text;
  const fs::path runs = dir.path() / "runs";
  const std::string args =
      "run " + (dir.path() / "chain.toml").string() + " --runs-dir " + runs.string();
  auto [code, out] = workbench(args, dir.path());
  INFO(out);
  REQUIRE(code == 0);
  const wb::Experiment e = [&] {
    wb::ExperimentOptions o;
    o.runs_dir = runs.string();
    return wb::parse_experiment(text, "chain.toml", wb_test::plugins(), o);
  }();
  REQUIRE(e.points.size() == 4);
  const fs::path exp = runs / "chain";
  const fs::path mae = exp / e.points[0].id, clusters = exp / e.points[1].id,
                 moce = exp / e.points[2].id, deploy = exp / e.points[3].id;
  // In order: each stage started after the one it needs had finished.
  CHECK(out.find("stage mae") < out.find("stage clusters"));
  CHECK(out.find("stage clusters") < out.find("stage moce"));
  CHECK(out.find("stage moce") < out.find("stage deploy"));
  for (const auto& d : {mae, clusters, moce, deploy})
    CHECK(wb::read_status(d / "status.toml").state == wb::RunState::Done);

  // The MoCE point used the MAE point's weights and the clustering's file.
  CHECK(fs::exists(clusters / "clusters.h5"));
  const std::string config = slurp(moce / "config.toml");
  CHECK(config.find("from = \"" + mae.string() + "\"") != std::string::npos);
  CHECK(config.find("clusters = \"" + clusters.string() + "\"") != std::string::npos);
  CHECK(slurp(moce / "run.log").find(clusters.string() + "/clusters.h5") != std::string::npos);
  // With base_lr = 1e-9 the experts are still what [init] made them: the dense MLP plus noise.
  const auto dense = wbtest::backbone_tensors(mae / "checkpoints" / "last.pt");
  const auto moe = wbtest::backbone_tensors(moce / "checkpoints" / "last.pt");
  const at::Tensor fc1 = dense.at("block1.fc1.weight").t();
  const at::Tensor w1 = moe.at("block1.moe.w1");
  REQUIRE(w1.size(0) == 2);
  const double ratio = ((w1 - fc1.unsqueeze(0)).std() / fc1.std()).item<double>();
  CHECK(ratio > 0.001);  // init.expert_noise = 0.01 of the weight's std
  CHECK(ratio < 0.05);
  const at::Tensor w2 = moe.at("block1.moe.w2");
  const at::Tensor fc2 = dense.at("block1.fc2.weight").t();
  const double ratio2 = ((w2 - fc2.unsqueeze(0)).std() / fc2.std()).item<double>();
  CHECK(ratio2 > 0.001);
  CHECK(ratio2 < 0.05);
  CHECK_FALSE(at::allclose(w1[0], w1[1], 0, 1e-6));  // the noise makes the copies differ
  // The weights the two share are copies (up to the 4 steps of lr 1e-9).
  CHECK(at::allclose(moe.at("block0.fc1.weight"), dense.at("block0.fc1.weight"), 0, 1e-6));

  // The deployed dense model was evaluated.
  CHECK(fs::exists(deploy / "deploy.toml"));
  const auto eval = wb::MetricsReader(deploy / "metrics.h5").eval();
  REQUIRE(eval.count("knn"));
  CHECK(eval.at("knn").at("top1").at(0) > 20.0);  // 5 classes: chance is 20 %

  // A rerun skips every finished point.
  const wb::RunStatus before = wb::read_status(moce / "status.toml");
  auto [code2, out2] = workbench(args, dir.path());
  INFO(out2);
  CHECK(code2 == 0);
  CHECK(wb::read_status(moce / "status.toml").finished == before.finished);
  for (const auto& p : e.points) CHECK(out2.find("skip " + p.id) != std::string::npos);

  // The report shows each stage's points.
  CHECK(slurp(exp / "report" / "index.html").find("deploy") != std::string::npos);

  // The runs folder moved, read from another working directory: the MoCE point's data.clusters
  // and its cluster file's source run (both written as paths of the old folder) are found in
  // the new one; the old folder is gone, so nothing else could serve them.
  const fs::path moved = dir.path() / "moved" / "runs";
  fs::create_directories(moved.parent_path());
  fs::rename(runs, moved);
  fs::create_directories(dir.path() / "elsewhere");
  const fs::path moce_moved = moved / "chain" / e.points[2].id;
  auto [code3, out3] =
      workbench("eval " + moce_moved.string() + " --threads 1 --add '{ plugin = \"routing_map\" }'",
                dir.path() / "elsewhere");
  INFO(out3);
  CHECK(code3 == 0);
  CHECK(out3.find((moved / "chain" / e.points[1].id / "clusters.h5").string()) !=
        std::string::npos);
  CHECK(wb::MetricsReader(moce_moved / "metrics.h5").eval().count("routing_map") == 1);
}

TEST_CASE(
    "workbench run: a point whose earlier point failed is not run, and the message names it") {
  wbtest::TempDir dir;
  std::string text = kStages;
  text.replace(text.find("seeds = [0, 1]"), 14, "seeds = [0]");
  text.replace(
      text.find("dataset = \"fashion_mnist\"\ntrain_limit = 128\ntest_limit = 64\n[base.datasets"),
      26, "dataset = \"fashion_mnist\"\npath = \"/nonexistent/fashion\"\n");
  std::ofstream(dir.path() / "chain.toml") << text;
  auto [code, out] = workbench("run " + (dir.path() / "chain.toml").string() + " --runs-dir " +
                                   (dir.path() / "runs").string() + " --no-report",
                               dir.path());
  INFO(out);
  CHECK(code == 1);
  wb::ExperimentOptions o;
  o.runs_dir = (dir.path() / "runs").string();
  const wb::Experiment e = wb::parse_experiment(text, "chain.toml", wb_test::plugins(), o);
  CHECK(wb::read_status(dir.path() / "runs" / "chain" / e.points[0].id / "status.toml").state ==
        wb::RunState::Failed);
  CHECK(out.find("skip " + e.points[1].id) != std::string::npos);
  CHECK(out.find("needs stage mae's point " + e.points[0].id + " (failed)") != std::string::npos);
  CHECK(out.find("needs stage clusters's point " + e.points[1].id + " (not run)") !=
        std::string::npos);
  CHECK_FALSE(fs::exists(dir.path() / "runs" / "chain" / e.points[2].id / "status.toml"));
}

TEST_CASE("workbench run --prepare: lists the training points, names the cluster and deploy ones") {
  wbtest::TempDir dir;
  std::ofstream(dir.path() / "chain.toml") << kStages;
  const fs::path runs = dir.path() / "runs";
  const std::string cmd = std::string(WB_WORKBENCH_EXE) + " run " +
                          (dir.path() / "chain.toml").string() + " --runs-dir " + runs.string() +
                          " --prepare > " + (dir.path() / "out.txt").string() + " 2> " +
                          (dir.path() / "err.txt").string();
  const int status = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(status));
  const std::string out = slurp(dir.path() / "out.txt"), err = slurp(dir.path() / "err.txt");
  INFO(out);
  INFO(err);
  CHECK(WEXITSTATUS(status) == 0);
  wb::ExperimentOptions o;
  o.runs_dir = runs.string();
  const wb::Experiment e = wb::parse_experiment(kStages, "chain.toml", wb_test::plugins(), o);
  std::string listed;
  for (const auto& p : e.points) {
    CAPTURE(p.id);
    const fs::path point = fs::absolute(runs) / "chain" / p.id;
    if (p.kind == "train") {
      listed += point.string() + "\n";
      CHECK(fs::exists(point / "config.toml"));
      CHECK(err.find("skip " + p.id) == std::string::npos);
    } else {
      // Not written, not listed: named on stderr with the command that runs it.
      CHECK_FALSE(fs::exists(point));
      CHECK(err.find("skip " + p.id) != std::string::npos);
      CHECK(err.find("--only " + p.id) != std::string::npos);
    }
    // A training point that uses earlier points says so.
    if (p.kind == "train" && !p.needs.empty())
      CHECK(err.find("note: " + p.id) != std::string::npos);
  }
  CHECK(out == listed);  // the training points, one directory per line, nothing else
}
