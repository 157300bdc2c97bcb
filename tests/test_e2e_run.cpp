// `workbench run` end to end with the real trainer and the dense `vit` backbone on a slice of
// Fashion-MNIST: a failing point (missing data, NaN loss) does not stop the others, a rerun
// skips finished points, a point killed with SIGKILL resumes from its last checkpoint, Ctrl-C
// while a point is in a long evaluator stops every process; MAE pre-training of a small TokenMoE
// with its reconstruction and routing-map evaluators (two mask ratios refused before it runs).
#include <doctest/doctest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <ATen/ATen.h>

#include "checkpoint_tensors.h"
#include "e2e_fixture.h"
#include "h5/metrics.h"
#include "store/status.h"
#include "test_data_helpers.h"

namespace fs = std::filesystem;
using wbtest::kFashion;
using wbtest::kTestPlugins;
using wbtest::point_with;
using wbtest::slurp;

namespace {

const std::string kBase =
    wbtest::small_vit_base(128, "[[base.evaluators]]\nplugin = \"accuracy\"\n");

}  // namespace

TEST_CASE(
    "workbench run: failing points are recorded and the sweep goes on, reruns skip done points") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  wbtest::TempDir dir;
  const std::string args =
      wbtest::run_args(wbtest::write_experiment(dir.path(), "e2e", kBase, R"(epochs = 1
checkpoint_every = 2

[[point]]
"data.path" = "/nonexistent/fashion"

[[point]]
losses = [ { plugin = "nan_at", nan_at = 3 } ]
evaluators = []
)"),
                       dir.path() / "runs");
  auto [code, out] = wbtest::workbench(args, dir.path(), kTestPlugins);
  INFO(out);
  CHECK(code == 1);  // some point failed
  const fs::path exp = dir.path() / "runs" / "e2e";
  const fs::path good = point_with(exp, "label = \"seed=0\"");
  const fs::path missing = point_with(exp, "nonexistent");
  const fs::path nan = point_with(exp, "nan_at");

  const wb::RunStatus good_status = wb::read_status(good / "status.toml");
  CHECK(good_status.state == wb::RunState::Done);
  const auto eval = wb::MetricsReader(good / "metrics.h5").eval();
  REQUIRE(eval.count("accuracy"));
  CHECK(eval.at("accuracy").at("top1").at(0) > 10.0);  // better than chance after 8 steps

  const wb::RunStatus missing_status = wb::read_status(missing / "status.toml");
  CHECK(missing_status.state == wb::RunState::Failed);
  CHECK(missing_status.error.find("/nonexistent/fashion") != std::string::npos);

  const wb::RunStatus nan_status = wb::read_status(nan / "status.toml");
  CHECK(nan_status.state == wb::RunState::Failed);
  // nan_at = 3 is the plugin's 0-based step: the 4th step, counted from 1 as the series are.
  CHECK(nan_status.error.find("loss is nan at step 4 (") != std::string::npos);
  // What the NaN point wrote before stays readable: checkpoint of step 2, losses of steps 1-3.
  CHECK(fs::exists(nan / "checkpoints" / "last.pt"));
  const wb::Series loss = wb::MetricsReader(nan / "metrics.h5").series("train/loss");
  CHECK(loss.steps == std::vector<std::int64_t>({1, 2, 3}));

  // Rerun: the finished point is skipped (its pid and end time are unchanged), the failed
  // ones run again and fail again.
  auto [code2, out2] = wbtest::workbench(args, dir.path(), kTestPlugins);
  INFO(out2);
  CHECK(code2 == 1);
  const wb::RunStatus again = wb::read_status(good / "status.toml");
  CHECK(again.pid == good_status.pid);
  CHECK(again.finished == good_status.finished);
  CHECK(out2.find("skipped") != std::string::npos);
  CHECK(wb::read_status(nan / "status.toml").pid != nan_status.pid);
}

TEST_CASE("workbench run: MAE pre-training of a TokenMoE, its reconstructions and routing map") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  wbtest::TempDir dir;
  const std::string base = wbtest::fashion_base(256, 64) + wbtest::views("mae") +
                           wbtest::small_token_moe("k = 1\n") + wbtest::kSmallMae +
                           R"([[base.losses]]
plugin = "load_balance"
[[base.evaluators]]
plugin = "reconstruction"
images = 64
pictures = 2
[[base.evaluators]]
plugin = "routing_map"
images = 64
[base.train]
batch = 32
epochs = 2
warmup_epochs = 0
base_lr = 1e-2
log_every = 1
stats_every = 1
)";
  const std::string args = wbtest::run_args(dir.path() / "mae.toml", dir.path() / "runs");
  const fs::path exp = dir.path() / "runs" / "mae";
  // A point with two mask ratios is refused before any point runs (the losses' checks).
  wbtest::write_experiment(dir.path(), "mae", base, R"([[point]]

[[point]]
losses = [ { plugin = "mae", mask_ratio = 0.5 }, { plugin = "mae", mask_ratio = 0.75 } ]
)");
  const auto [refused, why] = wbtest::workbench(args, dir.path(), kTestPlugins);
  CHECK(refused == 2);
  CHECK(why.find("different mask ratios") != std::string::npos);
  CHECK_FALSE(fs::exists(exp));

  wbtest::write_experiment(dir.path(), "mae", base, "[[point]]\n");
  auto [code, out] = wbtest::workbench(args, dir.path(), kTestPlugins);
  INFO(out);
  CHECK(code == 0);
  const fs::path good = point_with(exp, "label = \"seed=0\"");
  REQUIRE(wb::read_status(good / "status.toml").state == wb::RunState::Done);

  const wb::MetricsReader metrics(good / "metrics.h5");
  const wb::Series loss = metrics.series("loss/mae/reconstruction");
  REQUIRE(loss.values.size() == 16);  // 2 epochs of 8 steps
  CHECK(loss.values.back() < loss.values.front());
  CHECK_FALSE(metrics.series("routing/moe0/expert_load").values.empty());

  const auto eval = metrics.eval();
  REQUIRE(eval.count("reconstruction"));
  const double psnr = eval.at("reconstruction").at("psnr").at(0);
  // A finite, plausible PSNR of masked patches in [0, 1] pixels (mapped back with each patch's
  // own mean and variance, the error is well below the pixel range).
  CHECK(psnr > 3.0);
  CHECK(psnr < 60.0);
  const double mse = eval.at("reconstruction").at("mse").at(0);
  CHECK(mse > 0.0);
  CHECK(mse < 0.5);
  CHECK(fs::exists(good / "eval" / "reconstruction_test.png"));
  REQUIRE(eval.count("routing_map"));
  const double share = eval.at("routing_map").at("moe0/top_expert_class_share").at(0);
  CHECK(share >= 0.25 - 1e-9);  // some expert dominates at least a quarter of the classes
  CHECK(share <= 1.0);
}

TEST_CASE("workbench run: a point killed with SIGKILL resumes from its last checkpoint") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  wbtest::TempDir dir;
  const std::string args = wbtest::run_args(
      wbtest::write_experiment(dir.path(), "resume", kBase, "steps = 400\ncheckpoint_every = 4\n"),
      dir.path() / "runs");
  const pid_t parent =
      wbtest::start(wbtest::workbench_command(args, kTestPlugins), dir.path() / "first.txt");
  // Wait for a checkpoint, let training go on a little, then kill the point's process.
  const fs::path point = wbtest::wait_for_checkpoint(dir.path() / "runs" / "resume", 120);
  REQUIRE_MESSAGE(!point.empty(), "no checkpoint appeared");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const wb::RunStatus running = wb::read_status(point / "status.toml");
  REQUIRE(running.state == wb::RunState::Running);
  REQUIRE(running.pid > 0);
  REQUIRE(kill(static_cast<pid_t>(running.pid), SIGKILL) == 0);
  wbtest::finish(parent);
  const wb::RunStatus killed = wb::read_status(point / "status.toml");
  CHECK(killed.state == wb::RunState::Failed);
  CHECK(killed.error.find("SIGKILL") != std::string::npos);
  // The metrics file the killed process left is readable.
  CHECK(wb::MetricsReader(point / "metrics.h5").series_names().size() > 0);

  auto [code, out] = wbtest::workbench(args, dir.path(), kTestPlugins);
  INFO(out);
  CHECK(code == 0);
  const std::string log = slurp(point / "run.log");
  const auto at = log.find("resumed from");
  REQUIRE(at != std::string::npos);
  const std::int64_t resumed_step = std::stoll(log.substr(log.find("at step ", at) + 8));
  CHECK(resumed_step >= 4);
  CHECK(resumed_step % 4 == 0);
  CHECK(wb::read_status(point / "status.toml").state == wb::RunState::Done);
  // One row per step, no step twice, none missing, up to the end.
  const wb::Series loss = wb::MetricsReader(point / "metrics.h5").series("train/loss");
  REQUIRE(loss.steps.size() == 400);
  for (std::size_t i = 0; i < loss.steps.size(); ++i)
    CHECK(loss.steps[i] == static_cast<std::int64_t>(i + 1));
}

TEST_CASE("workbench run: Ctrl-C while a point fine-tunes in an evaluator stops every process") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  wbtest::TempDir dir;
  const fs::path file = wbtest::write_experiment(dir.path(), "interrupt", kBase, R"(steps = 2

[[base.evaluators]]
plugin = "finetune"
lrs = [0.1]
steps = 1000000
batch = 8
repeats = 1
)");
  const pid_t launcher =
      wbtest::start(wbtest::workbench_command(
                        wbtest::run_args(file, dir.path() / "runs", " --no-report"), kTestPlugins),
                    dir.path() / "out.txt");
  fs::path point;
  const bool evaluating = wbtest::wait_until(
      [&] {
        const fs::path exp = dir.path() / "runs" / "interrupt";
        if (fs::exists(exp))
          for (const auto& e : fs::directory_iterator(exp))
            if (slurp(e.path() / "run.log").find("evaluating: finetune") != std::string::npos)
              point = e.path();
        return !point.empty();
      },
      180);
  const pid_t trainer =
      point.empty() ? 0 : static_cast<pid_t>(wb::read_status(point / "status.toml").pid);
  int wstatus = 0;
  bool ended = false;
  if (evaluating && trainer > 0) {
    REQUIRE(kill(launcher, SIGINT) == 0);
    ended =
        wbtest::wait_until([&] { return waitpid(launcher, &wstatus, WNOHANG) == launcher; }, 60) &&
        wbtest::wait_until([&] { return !wbtest::alive(trainer); }, 10);
  }
  if (!ended) {  // leave nothing running behind a failed check
    if (trainer > 0) kill(trainer, SIGKILL);
    kill(launcher, SIGKILL);
    waitpid(launcher, &wstatus, 0);
  }
  INFO(slurp(dir.path() / "out.txt"));
  REQUIRE(evaluating);
  REQUIRE(trainer > 0);
  REQUIRE_MESSAGE(ended, "the launcher or its point outlived the interrupt");
  CHECK(WIFEXITED(wstatus));
  CHECK(WEXITSTATUS(wstatus) == 130);
  const wb::RunStatus status = wb::read_status(point / "status.toml");
  CHECK(status.state == wb::RunState::Failed);
  CHECK(status.error == "interrupted");
  CHECK(slurp(point / "run.log").find("interrupted") != std::string::npos);
  // What was written stays readable: the training rows and the evaluator that had finished.
  const wb::MetricsReader metrics(point / "metrics.h5");
  CHECK(metrics.series("train/loss").values.size() == 2);
  const auto eval = metrics.eval();
  CHECK(eval.count("accuracy") == 1);
  CHECK(eval.count("finetune") == 0);
}

TEST_CASE("status.toml: a resumed point adds the earlier attempts' seconds, a fresh start not") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  wbtest::TempDir dir;
  const std::string args = wbtest::run_args(
      wbtest::write_experiment(dir.path(), "seconds", kBase, "steps = 2\n"), dir.path() / "runs");
  auto [code, out] = wbtest::workbench(args, dir.path(), kTestPlugins);
  INFO(out);
  REQUIRE(code == 0);
  const fs::path point = point_with(dir.path() / "runs" / "seconds", "seed=0");
  const fs::path status_file = point / "status.toml";
  const double first = wb::read_status(status_file).elapsed_seconds;
  CHECK(first > 0);
  CHECK(first < 1000);

  // An earlier attempt that ran 1000 s and failed after its last checkpoint: the rerun resumes
  // that checkpoint, so its seconds come on top of the 1000.
  wb::RunStatus failed = wb::read_status(status_file);
  failed.state = wb::RunState::Failed;
  failed.error = "killed by SIGKILL";
  failed.elapsed_seconds = 1000;
  wb::write_status(status_file, failed);
  auto [code2, out2] = wbtest::workbench(args, dir.path(), kTestPlugins);
  INFO(out2);
  REQUIRE(code2 == 0);
  const wb::RunStatus resumed = wb::read_status(status_file);
  CHECK(resumed.state == wb::RunState::Done);
  CHECK(resumed.resumed_seconds == doctest::Approx(1000));
  CHECK(resumed.elapsed_seconds > 1000);
  CHECK(resumed.elapsed_seconds < 2000);

  // Without the checkpoint the point starts over: the earlier seconds are not its cost.
  wb::write_status(status_file, failed);
  fs::remove(point / "checkpoints" / "last.pt");
  auto [code3, out3] = wbtest::workbench(args, dir.path(), kTestPlugins);
  INFO(out3);
  REQUIRE(code3 == 0);
  const wb::RunStatus fresh = wb::read_status(status_file);
  CHECK(fresh.state == wb::RunState::Done);
  CHECK(fresh.resumed_seconds == 0);
  CHECK(fresh.elapsed_seconds < 1000);
}

TEST_CASE("workbench run --nproc 2: two Gloo ranks end with the same weights, rank 0 evaluates") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  wbtest::TempDir dir;
  auto [code, out] = wbtest::workbench(
      wbtest::run_args(wbtest::write_experiment(dir.path(), "ddp", kBase, "steps = 6\n"),
                       dir.path() / "runs", " --nproc 2 --threads 2"),
      dir.path(), kTestPlugins);
  INFO(out);
  REQUIRE(code == 0);
  const fs::path point = point_with(dir.path() / "runs" / "ddp", "seed=0");
  const auto rank0 = wbtest::backbone_tensors(point / "checkpoints" / "last.pt");
  const auto rank1 = wbtest::backbone_tensors(point / "rank1" / "checkpoints" / "last.pt");
  REQUIRE(rank0.size() > 5);
  REQUIRE(rank0.size() == rank1.size());
  // Averaged gradients and identical initial weights: identical weights after every step.
  for (const auto& [name, t] : rank0) CHECK_MESSAGE(at::allclose(t, rank1.at(name)), name);
  // The ranks saw different images (sharded), so their losses differ (not at step 1: the
  // classifier starts at zero, every first loss is ln 10).
  const auto loss0 = wb::MetricsReader(point / "metrics.h5").series("train/loss");
  const auto loss1 = wb::MetricsReader(point / "rank1" / "metrics.h5").series("train/loss");
  CHECK(loss0.values.back() != loss1.values.back());
  CHECK(wb::MetricsReader(point / "metrics.h5").eval().count("accuracy") == 1);
  CHECK_FALSE(fs::exists(point / "rank1" / "eval"));
}

// Here rather than in test_store.cpp: it needs a LibTorch error, and ATen's CHECK macro takes one
// argument (CHECKs in this file must not contain a bare comma).
TEST_CASE("status_error: status.toml keeps a message on one line, LibTorch's traces go") {
  CHECK(wb::status_error("loss is nan at step 4") == "loss is nan at step 4");
  CHECK(wb::status_error("cannot start from a.pt:\n  missing: head.weight\n") ==
        "cannot start from a.pt: missing: head.weight");
  std::string torch_message;
  try {
    (void)at::mm(at::ones({2, 3}), at::ones({2, 3}));  // a TORCH_CHECK: message + trace
  } catch (const std::exception& e) {
    torch_message = e.what();
  }
  REQUIRE(torch_message.find('\n') != std::string::npos);  // LibTorch's message has a trace
  const std::string kept = wb::status_error(torch_message);
  CHECK(kept.find('\n') == std::string::npos);
  const std::string first_line = torch_message.substr(0, torch_message.find('\n'));
  CHECK(kept == first_line + " [LibTorch's stack trace is in run.log]");
  CHECK(kept.find("frame #") == std::string::npos);
  // And status.toml round-trips it as one line.
  wbtest::TempDir dir;
  wb::RunStatus s;
  s.state = wb::RunState::Failed;
  s.error = kept;
  wb::write_status(dir.path() / "status.toml", s);
  CHECK(wb::read_status(dir.path() / "status.toml").error == kept);
}
