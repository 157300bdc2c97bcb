// Scale-out (docs/scale.md): one trainer per point (the point lock), launchers sharing a runs
// directory, points dying with their launcher, ranks started by a launcher's environment
// (torchrun's variables, set here by the test), and the same weights from 2 ranks as from 1
// process.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <ATen/ATen.h>

#include "checkpoint_tensors.h"
#include "config/experiment.h"
#include "dist/rendezvous.h"
#include "e2e_fixture.h"
#include "h5/metrics.h"
#include "store/point_lock.h"
#include "store/status.h"
#include "test_data_helpers.h"

namespace fs = std::filesystem;
using wbtest::alive;
using wbtest::count;
using wbtest::finish;
using wbtest::kFashion;
using wbtest::kTestPlugins;
using wbtest::point_dirs;
using wbtest::slurp;
using wbtest::start;

namespace {

std::string command(const std::string& args) {
  return wbtest::workbench_command(args, kTestPlugins);
}

int free_port() {
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t n = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &n);
  close(s);
  return ntohs(a.sin_port);
}

std::string host_name() {
  char name[256] = {};
  gethostname(name, sizeof name - 1);
  return name;
}

const std::string kBase = wbtest::small_vit_base(64);

// Starts the 2 ranks of a prepared point as torchrun --no-python would (its environment
// variables, a free port on this host); true when both succeed. Their output goes to
// logs/TAG0.txt and logs/TAG1.txt, printed when a rank fails.
bool two_ranks(const fs::path& point, const fs::path& logs, const std::string& tag) {
  const int port = free_port();
  std::vector<pid_t> ranks;
  for (int r = 0; r < 2; ++r) {
    const std::string env = "env RANK=" + std::to_string(r) + " LOCAL_RANK=" + std::to_string(r) +
                            " WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                            std::to_string(port) + " WB_RENDEZVOUS_TIMEOUT=120 ";
    ranks.push_back(start(env + command("_point " + point.string() + " --threads 1"),
                          logs / (tag + std::to_string(r) + ".txt")));
  }
  bool ok = true;
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    const int code = finish(ranks[r]);
    if (code != 0) MESSAGE(slurp(logs / (tag + std::to_string(r) + ".txt")));
    ok = ok && code == 0;
  }
  return ok;
}

}  // namespace

TEST_CASE("point lock: one holder at a time, named in the refusal, gone with its process") {
  wbtest::TempDir dir;
  wb::PointLock first = wb::PointLock::try_acquire(dir.path());
  REQUIRE(first.held());
  // flock conflicts between two opens even in one process: a second trainer is refused.
  const wb::PointLock second = wb::PointLock::try_acquire(dir.path());
  CHECK_FALSE(second.held());
  CHECK(second.holder() == "pid " + std::to_string(getpid()) + " on host " + host_name());
  first.release();
  CHECK(wb::PointLock::try_acquire(dir.path()).held());

  // A holder killed with SIGKILL leaves no lock behind.
  int ready[2];
  REQUIRE(pipe(ready) == 0);
  const pid_t child = fork();
  if (child == 0) {
    wb::PointLock mine = wb::PointLock::try_acquire(dir.path());
    const char c = mine.held() ? 'y' : 'n';
    if (write(ready[1], &c, 1) != 1) _exit(2);
    pause();
    _exit(0);
  }
  char c = 0;
  REQUIRE(read(ready[0], &c, 1) == 1);
  CHECK(c == 'y');
  const wb::PointLock while_held = wb::PointLock::try_acquire(dir.path());
  CHECK_FALSE(while_held.held());
  CHECK(while_held.holder() == "pid " + std::to_string(child) + " on host " + host_name());
  kill(child, SIGKILL);
  finish(child);
  CHECK(wb::PointLock::try_acquire(dir.path()).held());
  close(ready[0]);
  close(ready[1]);
}

TEST_CASE("--shard I/N keeps the points i with i mod N == I, and malformed shards are errors") {
  wb::Experiment e;
  for (int i = 0; i < 5; ++i) e.points.push_back(wb::Point{});
  for (int i = 0; i < 5; ++i) e.points[static_cast<std::size_t>(i)].id = std::to_string(i);
  wb::Experiment one = e;
  wb::keep_shard(one, "1/2");
  REQUIRE(one.points.size() == 2);
  CHECK(one.points[0].id == "1");
  CHECK(one.points[1].id == "3");
  wb::Experiment zero = e;
  wb::keep_shard(zero, "0/2");
  CHECK(zero.points.size() == 3);
  for (const char* bad : {"2/2", "1", "-1/2", "a/2", "1/0", "1/2x"}) {
    wb::Experiment copy = e;
    CHECK_THROWS_WITH_AS(wb::keep_shard(copy, bad), doctest::Contains("--shard"),
                         std::runtime_error);
  }
}

TEST_CASE("launcher environment: torchrun and SLURM variables, SLURM node lists") {
  CHECK(wb::first_slurm_host("node[01-04,07],gpu5") == "node01");
  CHECK(wb::first_slurm_host("gpu5,node[1-2]") == "gpu5");
  CHECK(wb::first_slurm_host("rack1-n[009-012]-ib") == "rack1-n009-ib");
  CHECK(wb::first_slurm_host("single") == "single");

  auto reader = [](std::map<std::string, std::string> vars) {
    return [vars](const char* name) -> const char* {
      auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  };
  CHECK_FALSE(wb::rendezvous_from_environment(reader({})).has_value());
  const auto torchrun = wb::rendezvous_from_environment(reader({{"RANK", "3"},
                                                                {"WORLD_SIZE", "8"},
                                                                {"LOCAL_RANK", "1"},
                                                                {"LOCAL_WORLD_SIZE", "2"},
                                                                {"MASTER_ADDR", "host-a"},
                                                                {"MASTER_PORT", "29511"}}));
  REQUIRE(torchrun.has_value());
  CHECK(torchrun->rank == 3);
  CHECK(torchrun->world == 8);
  CHECK(torchrun->local_rank == 1);
  CHECK(torchrun->local_world == 2);
  CHECK(torchrun->master_addr == "host-a");
  CHECK(torchrun->master_port == 29511);
  CHECK(torchrun->source == "torchrun");

  const auto slurm = wb::rendezvous_from_environment(reader({{"SLURM_PROCID", "5"},
                                                             {"SLURM_NTASKS", "8"},
                                                             {"SLURM_LOCALID", "1"},
                                                             {"SLURM_TASKS_PER_NODE", "4(x2)"},
                                                             {"SLURM_JOB_NODELIST", "gpu[07-08]"},
                                                             {"WB_RENDEZVOUS_TIMEOUT", "30"}}));
  REQUIRE(slurm.has_value());
  CHECK(slurm->rank == 5);
  CHECK(slurm->world == 8);
  CHECK(slurm->local_rank == 1);
  CHECK(slurm->local_world == 4);
  CHECK(slurm->master_addr == "gpu07");
  CHECK(slurm->master_port == 29500);
  CHECK(slurm->timeout == std::chrono::seconds(30));

  CHECK_THROWS_WITH(wb::rendezvous_from_environment(
                        reader({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}})),
                    doctest::Contains("outside a world of 2"));
  CHECK_THROWS_WITH(wb::rendezvous_from_environment(reader({{"RANK", "0"}, {"WORLD_SIZE", "2"}})),
                    doctest::Contains("MASTER_ADDR"));
  CHECK_THROWS_WITH(wb::rendezvous_from_environment(
                        reader({{"RANK", "x"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}})),
                    doctest::Contains("RANK='x'"));
}

TEST_CASE("two launchers on one runs directory train every point exactly once") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  wbtest::TempDir dir;
  const std::string args = wbtest::run_args(
      wbtest::write_experiment(dir.path(), "shared", kBase, "steps = 6\n", "[0, 1, 2]"),
      dir.path() / "runs", " --no-report");
  const pid_t a = start(command(args), dir.path() / "a.txt");
  const pid_t b = start(command(args), dir.path() / "b.txt");
  const int code_a = finish(a), code_b = finish(b);
  const std::string out_a = slurp(dir.path() / "a.txt"), out_b = slurp(dir.path() / "b.txt");
  INFO(out_a);
  INFO(out_b);
  CHECK(code_a == 0);
  CHECK(code_b == 0);
  const auto points = point_dirs(dir.path() / "runs" / "shared");
  REQUIRE(points.size() == 3);
  int started = 0;
  for (const auto& point : points) {
    const std::string id = point.filename().string();
    // Started by exactly one of the launchers, trained once: one training in its log, one row
    // per step, strictly increasing.
    const int starts = count(out_a, "start " + id) + count(out_b, "start " + id);
    CHECK_MESSAGE(starts == 1, id);
    started += starts;
    CHECK(count(slurp(point / "run.log"), "training: ") == 1);
    CHECK(wb::read_status(point / "status.toml").state == wb::RunState::Done);
    const wb::Series loss = wb::MetricsReader(point / "metrics.h5").series("train/loss");
    REQUIRE(loss.steps.size() == 6);
    for (std::size_t i = 0; i < loss.steps.size(); ++i)
      CHECK(loss.steps[i] == static_cast<std::int64_t>(i + 1));
  }
  CHECK(started == 3);
}

TEST_CASE(
    "a point dies with its killed launcher, a second trainer is refused, a rerun takes over") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  wbtest::TempDir dir;
  const std::string args = wbtest::run_args(
      wbtest::write_experiment(dir.path(), "long", kBase, "steps = 400\ncheckpoint_every = 4\n"),
      dir.path() / "runs", " --no-report");
  const pid_t launcher = start(command(args), dir.path() / "first.txt");
  const fs::path exp = dir.path() / "runs" / "long";
  wb::RunStatus running;
  const fs::path point = wbtest::wait_for_checkpoint(exp, 180, [&](const fs::path& p) {
    running = wb::read_status(p / "status.toml");
    return running.state == wb::RunState::Running && running.pid > 0;
  });
  REQUIRE_MESSAGE(!point.empty(), "no checkpoint appeared");
  REQUIRE(running.pid > 0);
  const pid_t trainer = static_cast<pid_t>(running.pid);

  // A second launcher leaves the point to its holder and says who holds it; the holder's
  // status is untouched.
  const pid_t second = start(command(args), dir.path() / "second.txt");
  CHECK(finish(second) == 0);
  const std::string second_out = slurp(dir.path() / "second.txt");
  INFO(second_out);
  CHECK(second_out.find("trained by pid " + std::to_string(trainer) + " on host " + host_name()) !=
        std::string::npos);
  CHECK(wb::read_status(point / "status.toml").pid == running.pid);
  // `_point` run by hand is refused too, naming the holder.
  const pid_t by_hand = start(command("_point " + point.string()), dir.path() / "by_hand.txt");
  CHECK(finish(by_hand) != 0);
  CHECK(slurp(dir.path() / "by_hand.txt")
            .find("already being trained by pid " + std::to_string(trainer)) != std::string::npos);

  // SIGKILL the launcher: its point must not train on as an orphan.
  REQUIRE(kill(launcher, SIGKILL) == 0);
  finish(launcher);
  const auto gone_by = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (alive(trainer) && std::chrono::steady_clock::now() < gone_by)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK_FALSE(alive(trainer));

  // The dead claim is taken over: the rerun resumes and finishes the point, one row per step.
  const pid_t rerun = start(command(args), dir.path() / "rerun.txt");
  CHECK(finish(rerun) == 0);
  INFO(slurp(dir.path() / "rerun.txt"));
  CHECK(wb::read_status(point / "status.toml").state == wb::RunState::Done);
  CHECK(slurp(point / "run.log").find("resumed from") != std::string::npos);
  const wb::Series loss = wb::MetricsReader(point / "metrics.h5").series("train/loss");
  REQUIRE(loss.steps.size() == 400);
  for (std::size_t i = 0; i < loss.steps.size(); ++i)
    CHECK(loss.steps[i] == static_cast<std::int64_t>(i + 1));
}

TEST_CASE("ranks from torchrun's environment: 2 ranks end with the weights of 1 process") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  wbtest::TempDir dir;
  const std::string file =
      wbtest::write_experiment(dir.path(), "ddp", kBase, "steps = 6\n").string();
  // One process.
  const pid_t single = start(
      command("run " + file + " --runs-dir " + (dir.path() / "single").string() + " --no-report"),
      dir.path() / "single.txt");
  REQUIRE(finish(single) == 0);
  const fs::path one = point_dirs(dir.path() / "single" / "ddp").at(0);

  // Two ranks started as torchrun --no-python starts them, on a prepared point directory.
  const pid_t prepare = start(
      command("run " + file + " --runs-dir " + (dir.path() / "launched").string() + " --prepare"),
      dir.path() / "prepare.txt");
  REQUIRE(finish(prepare) == 0);
  const fs::path point = point_dirs(dir.path() / "launched" / "ddp").at(0);
  CHECK(slurp(dir.path() / "prepare.txt").find(point.string()) != std::string::npos);
  CHECK(two_ranks(point, dir.path(), "rank"));
  CHECK(wb::read_status(point / "status.toml").state == wb::RunState::Done);
  const auto single_weights = wbtest::backbone_tensors(one / "checkpoints" / "last.pt");
  const auto rank0 = wbtest::backbone_tensors(point / "checkpoints" / "last.pt");
  const auto rank1 = wbtest::backbone_tensors(point / "rank1" / "checkpoints" / "last.pt");
  REQUIRE(rank0.size() > 5);
  REQUIRE(rank0.size() == single_weights.size());
  REQUIRE(rank1.size() == single_weights.size());
  // The same global batches, averaged gradients of equal halves: the weights of one process
  // (up to the order of float sums).
  for (const auto& [name, t] : single_weights) {
    CHECK_MESSAGE(at::allclose(rank0.at(name), t, 1e-4, 1e-5), name);
    CHECK_MESSAGE(at::allclose(rank1.at(name), t, 1e-4, 1e-5), name);
  }
  // The weights moved: the comparison is not between initial weights.
  const auto loss = wb::MetricsReader(one / "metrics.h5").series("train/loss");
  CHECK(loss.values.front() != loss.values.back());
}

TEST_CASE("a rank that does not join is an error naming it, not a hang") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  wbtest::TempDir dir;
  const pid_t prepare = start(
      command(wbtest::run_args(wbtest::write_experiment(dir.path(), "alone", kBase, "steps = 2\n"),
                               dir.path() / "runs", " --prepare")),
      dir.path() / "prepare.txt");
  REQUIRE(finish(prepare) == 0);
  const fs::path point = point_dirs(dir.path() / "runs" / "alone").at(0);
  const std::string env =
      "env RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(free_port()) +
      " WB_RENDEZVOUS_TIMEOUT=3 ";
  const pid_t rank0 =
      start(env + command("_point " + point.string() + " --threads 1"), dir.path() / "rank0.txt");
  CHECK(finish(rank0) == 1);
  const wb::RunStatus status = wb::read_status(point / "status.toml");
  CHECK(status.state == wb::RunState::Failed);
  CHECK(status.error.find("rank 1 of 2 did not join the rendezvous at 127.0.0.1:") !=
        std::string::npos);
}

namespace {

fs::path prepare_point(const fs::path& dir, const std::string& name, const std::string& train) {
  // A TokenMoE (the last of 2 blocks) under noisy top-k, at a constant learning rate with every
  // step clipped.
  const std::string base =
      wbtest::fashion_base(128, 32) + wbtest::views("train") + wbtest::small_token_moe() +
      "[[base.losses]]\nplugin = \"classify\"\n"
      "[base.train]\nbatch = 16\nwarmup_epochs = 0\nlr_scaling = \"none\"\nbase_lr = 0.01\n"
      "min_lr = 0.01\nclip_grad = 0.001\nlog_every = 1\n";
  const pid_t prepare =
      start(command(wbtest::run_args(wbtest::write_experiment(dir, name, base, train), dir / "runs",
                                     " --prepare")),
            dir / (name + "_prepare.txt"));
  REQUIRE(finish(prepare) == 0);
  return point_dirs(dir / "runs" / name).at(0);
}

std::vector<double> losses(const fs::path& run_dir) {
  return wb::MetricsReader(run_dir / "metrics.h5").series("train/loss").values;
}

}  // namespace

TEST_CASE("expert parallelism: a 2-rank run equals data parallel and resumes exactly") {
  REQUIRE_MESSAGE(fs::exists(kFashion), "Fashion-MNIST (dataset-fashion-mnist) is not installed");
  wbtest::TempDir dir;
  // A constant learning rate, so that a run of 3 steps continued to 6 is the run of 6 steps;
  // every step clipped, so that the weights depend on the gradients' scale (AdamW alone would
  // hardly see a constant factor on the experts' gradients).
  const fs::path whole = prepare_point(dir.path(), "whole", "steps = 6\nexpert_parallel = true\n");
  const fs::path cut = prepare_point(dir.path(), "cut", "steps = 3\nexpert_parallel = true\n");
  const fs::path dp = prepare_point(dir.path(), "dp", "steps = 6\n");
  REQUIRE(two_ranks(whole, dir.path(), "whole"));
  REQUIRE(two_ranks(dp, dir.path(), "dp"));
  REQUIRE(two_ranks(cut, dir.path(), "cut"));
  // Stopped after step 3; resumed from the ranks' sharded checkpoints to step 6.
  std::string config = slurp(cut / "config.toml");
  const auto at = config.find("steps = 3");
  REQUIRE(at != std::string::npos);
  config.replace(at, 9, "steps = 6");
  std::ofstream(cut / "config.toml") << config;
  REQUIRE(two_ranks(cut, dir.path(), "resumed"));
  CHECK(slurp(cut / "run.log").find("resumed from") != std::string::npos);
  CHECK(slurp(cut / "rank1" / "run.log").find("resumed from") != std::string::npos);
  CHECK(slurp(whole / "run.log").find("expert parallel: 2 experts") != std::string::npos);

  // Each rank's checkpoint holds its 2 of the 4 experts, with the optimizer's moments; the
  // same losses and weights as the uninterrupted run on both ranks.
  for (const std::string rank : {"", "rank1"}) {
    CAPTURE(rank);
    const auto a = losses(whole / rank), b = losses(cut / rank);
    REQUIRE(a.size() == 6);
    REQUIRE(b.size() == 6);
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(b[i] == doctest::Approx(a[i]).epsilon(1e-5));
    const auto wa = wbtest::backbone_tensors(whole / rank / "checkpoints" / "last.pt");
    const auto wb_ = wbtest::backbone_tensors(cut / rank / "checkpoints" / "last.pt");
    REQUIRE(wa.size() == wb_.size());
    for (const auto& [name, t] : wa) CHECK_MESSAGE(at::allclose(wb_.at(name), t, 1e-4, 1e-6), name);
  }
  // Against data parallel (all experts on both ranks, gradients averaged): the same losses and
  // weights, the experts being the two shards side by side. This checks the experts' gradient
  // scale (the exchange sums over ranks; the trainer divides by their number).
  const auto shard0 = wbtest::backbone_tensors(whole / "checkpoints" / "last.pt");
  const auto shard1 = wbtest::backbone_tensors(whole / "rank1" / "checkpoints" / "last.pt");
  const auto full = wbtest::backbone_tensors(dp / "checkpoints" / "last.pt");
  REQUIRE(shard0.size() == full.size());
  int experts = 0;
  for (const auto& [name, t] : full) {
    const at::Tensor mine = shard0.at(name);
    const bool sharded = mine.sizes() != t.sizes();
    experts += sharded;
    const at::Tensor joined = sharded ? at::cat({mine, shard1.at(name)}) : mine;
    CHECK_MESSAGE(at::allclose(joined, t, 1e-4, 1e-5), name);
  }
  CHECK(experts == 4);  // w1, b1, w2, b2 of the one MoE block
  const auto a = losses(whole), d = losses(dp);
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(d[i] == doctest::Approx(a[i]).epsilon(1e-4));
  CHECK(a.front() != a.back());

  // A shard alone is refused where all experts are needed, naming the cause.
  const pid_t eval = start(command("eval " + whole.string() + " --add '{ plugin = \"knn\" }'"),
                           dir.path() / "eval.txt");
  CHECK(finish(eval) != 0);
  CHECK(slurp(dir.path() / "eval.txt").find("expert-parallel run over 2 ranks") !=
        std::string::npos);
}
