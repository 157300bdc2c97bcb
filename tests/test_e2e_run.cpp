// `workbench run` end to end with the real trainer and the dense `vit` backbone on a slice of
// Fashion-MNIST: a failing point (missing data, NaN loss) does not stop the others, a rerun
// skips finished points, a point killed with SIGKILL resumes from its last checkpoint, Ctrl-C
// while a point is in a long evaluator stops every process; MAE pre-training of a small TokenMoE
// with its reconstruction and routing-map evaluators.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include <ATen/ATen.h>

#include "checkpoint_tensors.h"
#include "h5/metrics.h"
#include "store/status.h"
#include "test_data_helpers.h"

namespace fs = std::filesystem;

namespace {

const char* kFashion = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";

std::string slurp(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string command(const std::string& args) {
  return std::string(WB_WORKBENCH_EXE) + " " + args + " --plugin-path " + WB_E2E_PLUGIN_DIR;
}

std::pair<int, std::string> run(const std::string& args, const fs::path& scratch) {
  const fs::path out = scratch / "out.txt";
  const int status = std::system((command(args) + " > " + out.string() + " 2>&1").c_str());
  REQUIRE(WIFEXITED(status));
  return {WEXITSTATUS(status), slurp(out)};
}

// The point directories of an experiment, keyed by a word of their label.
fs::path point_with(const fs::path& exp_dir, const std::string& label_word) {
  for (const auto& e : fs::directory_iterator(exp_dir))
    if (fs::exists(e.path() / "point.toml") &&
        slurp(e.path() / "point.toml").find(label_word) != std::string::npos)
      return e.path();
  FAIL("no point labelled with " << label_word << " in " << exp_dir);
  return {};
}

const char* kBase = R"(
[base]
threads = 1
workers = 1
[base.data]
dataset = "fashion_mnist"
train_limit = 256
test_limit = 128
[base.views]
recipe = "train"
[base.backbone]
plugin = "vit"
patch = 7
dim = 16
depth = 1
heads = 2
[[base.losses]]
plugin = "classify"
[[base.evaluators]]
plugin = "accuracy"
[base.train]
batch = 32
warmup_epochs = 0
log_every = 1
)";

}  // namespace

TEST_CASE(
    "workbench run: failing points are recorded and the sweep goes on, reruns skip done points") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  wbtest::TempDir dir;
  std::ofstream(dir.path() / "sweep.toml") << R"([experiment]
name = "e2e"
seeds = [0]
)" << kBase << R"(
epochs = 1
checkpoint_every = 2

[[point]]
"data.path" = "/nonexistent/fashion"

[[point]]
losses = [ { plugin = "nan_at", nan_at = 3 } ]
evaluators = []
)";
  const std::string args = "run " + (dir.path() / "sweep.toml").string() + " --runs-dir " +
                           (dir.path() / "runs").string();
  auto [code, out] = run(args, dir.path());
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
  auto [code2, out2] = run(args, dir.path());
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
  std::ofstream(dir.path() / "mae.toml") << R"([experiment]
name = "mae"
seeds = [0]
[base]
threads = 1
workers = 1
[base.data]
dataset = "fashion_mnist"
train_limit = 256
test_limit = 64
[base.views]
recipe = "mae"
[base.backbone]
plugin = "vit"
patch = 7
dim = 16
depth = 2
heads = 2
experts = 4
moe_last = 1
[base.gate]
plugin = "noisy_topk"
k = 1
[[base.losses]]
plugin = "mae"
decoder_dim = 16
decoder_depth = 1
decoder_heads = 2
[[base.losses]]
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

[[point]]

[[point]]
losses = [ { plugin = "mae", mask_ratio = 0.5 }, { plugin = "mae", mask_ratio = 0.75 } ]
)";
  auto [code, out] = run(
      "run " + (dir.path() / "mae.toml").string() + " --runs-dir " + (dir.path() / "runs").string(),
      dir.path());
  INFO(out);
  CHECK(code == 1);  // the point with two mask ratios fails
  const fs::path exp = dir.path() / "runs" / "mae";
  const fs::path bad = point_with(exp, "mask_ratio");
  CHECK(wb::read_status(bad / "status.toml").error.find("different mask ratios") !=
        std::string::npos);
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
  std::ofstream(dir.path() / "long.toml") << R"([experiment]
name = "resume"
seeds = [0]
)" << kBase << R"(
steps = 400
checkpoint_every = 4
)";
  const std::string args = "run " + (dir.path() / "long.toml").string() + " --runs-dir " +
                           (dir.path() / "runs").string();
  const pid_t parent = fork();
  REQUIRE(parent >= 0);
  if (parent == 0) {
    const std::string c = command(args) + " > " + (dir.path() / "first.txt").string() + " 2>&1";
    execl("/bin/sh", "sh", "-c", c.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait for a checkpoint, let training go on a little, then kill the point's process.
  const fs::path exp = dir.path() / "runs" / "resume";
  fs::path point;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(exp))
      for (const auto& e : fs::directory_iterator(exp))
        if (fs::exists(e.path() / "checkpoints" / "last.pt")) point = e.path();
    if (!point.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE_MESSAGE(!point.empty(), "no checkpoint appeared");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const wb::RunStatus running = wb::read_status(point / "status.toml");
  REQUIRE(running.state == wb::RunState::Running);
  REQUIRE(running.pid > 0);
  REQUIRE(kill(static_cast<pid_t>(running.pid), SIGKILL) == 0);
  int wstatus = 0;
  waitpid(parent, &wstatus, 0);
  const wb::RunStatus killed = wb::read_status(point / "status.toml");
  CHECK(killed.state == wb::RunState::Failed);
  CHECK(killed.error.find("SIGKILL") != std::string::npos);
  // The metrics file the killed process left is readable.
  CHECK(wb::MetricsReader(point / "metrics.h5").series_names().size() > 0);

  auto [code, out] = run(args, dir.path());
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

namespace {

// Polls `done` every 50 ms until it holds or `seconds` pass; returns whether it held.
bool wait_until(const std::function<bool()>& done, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

bool process_exists(pid_t pid) {
  return kill(pid, 0) == 0 || errno == EPERM;
}

}  // namespace

TEST_CASE("workbench run: Ctrl-C while a point fine-tunes in an evaluator stops every process") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  wbtest::TempDir dir;
  const fs::path file = dir.path() / "interrupt.toml";
  std::ofstream(file) << R"([experiment]
name = "interrupt"
seeds = [0]
)" << kBase << R"(
steps = 2

[[base.evaluators]]
plugin = "finetune"
lrs = [0.1]
steps = 1000000
batch = 8
repeats = 1
)";
  // Everything the child needs is built before fork: after it only exec's calls.
  const std::string out = (dir.path() / "out.txt").string(), runs = (dir.path() / "runs").string();
  const std::string file_arg = file.string();
  const pid_t launcher = fork();
  REQUIRE(launcher >= 0);
  if (launcher == 0) {
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execl(WB_WORKBENCH_EXE, WB_WORKBENCH_EXE, "run", file_arg.c_str(), "--runs-dir", runs.c_str(),
          "--no-report", "--plugin-path", WB_E2E_PLUGIN_DIR, static_cast<char*>(nullptr));
    _exit(127);
  }
  fs::path point;
  const bool evaluating = wait_until(
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
    ended = wait_until([&] { return waitpid(launcher, &wstatus, WNOHANG) == launcher; }, 60) &&
            wait_until([&] { return !process_exists(trainer); }, 10);
  }
  if (!ended) {  // leave nothing running behind a failed check
    if (trainer > 0) kill(trainer, SIGKILL);
    kill(launcher, SIGKILL);
    waitpid(launcher, &wstatus, 0);
  }
  INFO(slurp(out));
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
  std::ofstream(dir.path() / "short.toml") << R"([experiment]
name = "seconds"
seeds = [0]
)" << kBase << R"(
steps = 2
)";
  const std::string args = "run " + (dir.path() / "short.toml").string() + " --runs-dir " +
                           (dir.path() / "runs").string();
  auto [code, out] = run(args, dir.path());
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
  auto [code2, out2] = run(args, dir.path());
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
  auto [code3, out3] = run(args, dir.path());
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
  std::ofstream(dir.path() / "ddp.toml") << R"([experiment]
name = "ddp"
seeds = [0]
)" << kBase << R"(
steps = 6
)";
  auto [code, out] = run("run " + (dir.path() / "ddp.toml").string() + " --runs-dir " +
                             (dir.path() / "runs").string() + " --nproc 2 --threads 2",
                         dir.path());
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
