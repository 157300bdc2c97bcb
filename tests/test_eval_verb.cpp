// `workbench eval` end to end: a tiny run (test backbone tiny_moe, 200 Fashion-MNIST images,
// one epoch) trained by `workbench run`, then evaluated again from its checkpoint: missing
// evaluators only, --add with schema validation, --evaluator with --force, bad names.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "config/run_config.h"
#include "e2e_fixture.h"
#include "h5/metrics.h"
#include "plugin/loader.h"
#include "store/point_lock.h"
#include "store/status.h"
#include "test_data_helpers.h"
#include "workbench/draw.h"
#include "workbench/registry.h"

namespace fs = std::filesystem;
using wbtest::count;
using wbtest::slurp;

namespace {

const std::string kPlugin = std::string(WB_E2E_PLUGIN_DIR) + "/test_tiny_moe.so";

// Runs the workbench with `args` (shell words) and the test backbone; returns the exit code and
// the output.
std::pair<int, std::string> workbench(const std::string& args, const fs::path& scratch) {
  return wbtest::workbench(args, scratch, kPlugin);
}

}  // namespace

TEST_CASE("workbench eval: missing evaluators, --add, --evaluator --force, errors") {
  // The set-up installs dataset-fashion-mnist: its absence is a failure, not a skip.
  REQUIRE_MESSAGE(fs::exists(wbtest::kFashion),
                  "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  wbtest::TempDir dir;
  // A transfer set as an image folder: 3 classes of class-coloured 12 px RGB squares.
  const fs::path folder = dir.path() / "colours";
  for (const auto& [split, n] : {std::pair<std::string, int>{"train", 4}, {"test", 3}})
    for (int c = 0; c < 3; ++c) {
      fs::create_directories(folder / split / ("class" + std::to_string(c)));
      for (int i = 0; i < n; ++i) {
        wb::Image img{3, 12, 12, std::vector<std::uint8_t>(12 * 12 * 3)};
        for (std::size_t p = 0; p < img.pixels.size(); ++p)
          img.pixels[p] =
              static_cast<std::uint8_t>(p % 3 == static_cast<std::size_t>(c) ? 200 + 10 * i : 30);
        wb::write_png(
            (folder / split / ("class" + std::to_string(c)) / (std::to_string(i) + ".png"))
                .string(),
            img);
      }
    }
  const fs::path experiment = wbtest::write_experiment(
      dir.path(), "evaltest",
      wbtest::fashion_base(
          200, 100,
          "[base.datasets.transfer]\ndataset = \"folder\"\npath = \"" + folder.string() + R"("
channels = 1      # RGB folder -> the grey backbone
image_size = 16   # the eval recipe resizes to the backbone's 28 px

[base.backbone]
plugin = "tiny_moe"

[[base.losses]]
plugin = "classify"

[[base.evaluators]]
plugin = "knn"
k = 5

[base.train]
epochs = 1
batch = 50
warmup_epochs = 0
)"));
  auto [code, out] = workbench("run " + experiment.string() + " --runs-dir " +
                                   (dir.path() / "runs").string() + " --no-report",
                               dir.path());
  REQUIRE_MESSAGE(code == 0, out);
  const fs::path run = wbtest::only_run(dir.path() / "runs" / "evaltest");
  const double knn_top1 = wb::MetricsReader(run / "metrics.h5").eval().at("knn").at("top1").at(0);

  {  // --add runs extra evaluators, records them in metrics.h5, status and config.toml
    std::tie(code, out) = workbench("eval " + run.string() +
                                        " --add '{ plugin = \"routing_consistency\", images = 20 }'"
                                        " --add '{ plugin = \"linear_probe\", epochs = 2 }'"
                                        " --add '{ plugin = \"few_shot\", dataset = \"transfer\","
                                        " shots = [2], seeds = 2 }'",
                                    dir.path());
    REQUIRE_MESSAGE(code == 0, out);
    wb::MetricsReader metrics(run / "metrics.h5");
    const auto eval = metrics.eval();
    CHECK(eval.at("knn").at("top1").at(0) == knn_top1);  // not rerun
    CHECK(metrics.eval_shape("routing_consistency", "cls_corresponding") ==
          std::vector<std::int64_t>{1});
    const double corr = eval.at("routing_consistency").at("patch_corresponding").at(0);
    CHECK(corr >= 0.0);
    CHECK(corr <= 2.0);  // k = 2
    CHECK(eval.at("linear_probe").count("top1") == 1);
    // Few-shot on the folder set named in [datasets], converted to grey and resized.
    CHECK(eval.at("few_shot").at("2shot_per_class") == std::vector<double>{2, 2, 2});
    CHECK(eval.at("few_shot").at("2shot").size() == 2);
    const auto status = wb::read_status(run / "status.toml");
    CHECK(status.state == wb::RunState::Done);
    CHECK(status.evaluators_done ==
          std::vector<std::string>{"knn", "routing_consistency", "linear_probe", "few_shot"});
    wb::Registry registry;
    wb::load_plugins(registry, {kPlugin});
    const wb::RunConfig config = wb::load_run_config(run / "config.toml", registry);
    REQUIRE(config.evaluators.size() == 4);
    CHECK(config.evaluators[1].plugin == "routing_consistency");
    CHECK(config.evaluators[1].params.integer("images") == 20);
  }

  {  // --evaluator NAME --force reruns that one; an --add table already listed is that one
    std::tie(code, out) =
        workbench("eval " + run.string() + " --evaluator knn --force" +
                      " --add '{ plugin = \"routing_consistency\", images = 20 }'",
                  dir.path());
    CHECK_MESSAGE(code == 0, out);
    const std::string log = slurp(run / "run.log");
    CHECK(count(log, "evaluating: knn") == 2);
    CHECK(count(log, "evaluating: routing_consistency") == 2);
    CHECK(count(log, "evaluating: linear_probe") == 1);
    // Same checkpoint (step 4 of 4), same cached features, same k-NN.
    CHECK(wb::MetricsReader(run / "metrics.h5").eval().at("knn").at("top1").at(0) == knn_top1);
    CHECK(fs::exists(run / "eval" / "features_train_data_train_step4.pt"));
    for (const auto& f : fs::directory_iterator(run / "eval")) {
      const bool other_weights = f.path().extension() == ".pt" &&
                                 f.path().filename().string().find("_step4.") == std::string::npos;
      CHECK_MESSAGE(!other_weights, f.path());
    }
    wb::Registry registry;
    wb::load_plugins(registry, {kPlugin});
    CHECK(wb::load_run_config(run / "config.toml", registry).evaluators.size() == 4);
  }

  {  // without options: only what is missing, here nothing
    std::tie(code, out) = workbench("eval " + run.string(), dir.path());
    CHECK_MESSAGE(code == 0, out);
    CHECK(out.find("nothing to evaluate") != std::string::npos);
    CHECK(count(slurp(run / "run.log"), "evaluating: knn") == 2);
  }

  {  // errors: a parameter out of its range, an unknown evaluator name
    std::tie(code, out) =
        workbench("eval " + run.string() + " --add '{ plugin = \"knn\", k = 0 }'", dir.path());
    CHECK(code == 2);
    CHECK(out.find("--add: evaluators.knn.k = 0 is out of range") != std::string::npos);
    std::tie(code, out) = workbench("eval " + run.string() + " --evaluator nope", dir.path());
    CHECK(code == 2);
    CHECK(out.find("no evaluator named 'nope'") != std::string::npos);
    std::tie(code, out) = workbench("eval " + (dir.path() / "nowhere").string(), dir.path());
    CHECK(code == 2);
    CHECK(out.find("not a run directory") != std::string::npos);
  }

  {  // the point's lock held by another process (here: this one): refused, nothing written
    const wb::PointLock lock = wb::PointLock::try_acquire(run);
    REQUIRE(lock.held());
    const std::string log_before = slurp(run / "run.log");
    std::tie(code, out) =
        workbench("eval " + run.string() + " --evaluator knn --force", dir.path());
    CHECK(code == 2);
    CHECK_MESSAGE(out.find("is in use by pid " + std::to_string(getpid())) != std::string::npos,
                  out);
    CHECK(slurp(run / "run.log") == log_before);
  }

  {  // Ctrl-C while an added evaluator fine-tunes: it stops at its next batch, the process
     // exits (not killed by the signal), and metrics.h5 keeps what was there
    const int evaluations = count(slurp(run / "run.log"), "evaluating: ");
    const pid_t eval = wbtest::start(
        wbtest::workbench_command("eval " + run.string() +
                                      " --add '{ plugin = \"finetune\", lrs = [0.1], steps = "
                                      "1000000, batch = 8, repeats = 1 }'",
                                  kPlugin),
        dir.path() / "eval_out.txt");
    const bool tuning = wbtest::wait_until(
        [&] {
          return count(slurp(run / "run.log"), "evaluating: finetune") == 1 &&
                 count(slurp(run / "run.log"), "evaluating: ") > evaluations;
        },
        120);
    int status = 0;
    bool ended = false;
    if (tuning) {
      REQUIRE(kill(eval, SIGINT) == 0);
      ended = wbtest::wait_until([&] { return waitpid(eval, &status, WNOHANG) == eval; }, 60);
    }
    if (!ended) {
      kill(eval, SIGKILL);
      waitpid(eval, &status, 0);
    }
    INFO(slurp(dir.path() / "eval_out.txt"));
    REQUIRE(tuning);
    REQUIRE(ended);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 130);
    CHECK(slurp(run / "run.log").find("interrupted") != std::string::npos);
    const auto eval_metrics = wb::MetricsReader(run / "metrics.h5").eval();
    CHECK(eval_metrics.count("finetune") == 0);
    CHECK(eval_metrics.at("knn").at("top1").at(0) == knn_top1);
  }
}
