// Expert parallelism (docs/scale.md): Communicator::all_to_all over two Gloo ranks, and the
// expert-parallel MoE layer over two ranks against the single-process layer on the joint batch.
#include <doctest/doctest.h>

#include <ATen/ATen.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

#include "built_plugins.h"
#include "config/run_config.h"
#include "dist/communicator.h"
#include "workbench/moe_layer.h"

namespace fs = std::filesystem;

namespace {

// Runs `body(comm, rank)` in this process (rank 0) and a forked child (rank 1), connected by
// Gloo through a file store. Returns the failures of both ranks ("" when none).
std::string on_two_ranks(const std::string& tag,
                         const std::function<std::string(wb::Communicator&, int)>& body) {
  const fs::path store = fs::temp_directory_path() / (tag + std::to_string(getpid()));
  fs::remove(store);
  int pipe_fds[2];
  REQUIRE(pipe(pipe_fds) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  const int rank = child == 0 ? 1 : 0;
  std::string failure;
  try {
    auto comm = wb::make_c10d_communicator(store.string(), rank, 2, c10::Device(c10::kCPU));
    failure = body(*comm, rank);
    comm->barrier();
  } catch (const std::exception& e) {
    failure += std::string("exception: ") + e.what();
  }
  if (child == 0) {
    const std::string message = failure.empty() ? "" : "rank 1: " + failure;
    if (!message.empty() && write(pipe_fds[1], message.data(), message.size()) < 0) _exit(2);
    _exit(failure.empty() ? 0 : 1);
  }
  close(pipe_fds[1]);
  std::string theirs;
  char buffer[512];
  for (ssize_t n; (n = read(pipe_fds[0], buffer, sizeof buffer)) > 0;) theirs.append(buffer, n);
  close(pipe_fds[0]);
  int status = 0;
  waitpid(child, &status, 0);
  fs::remove(store);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failure += " rank 1 failed " + theirs;
  return failure;
}

std::string compare(const at::Tensor& a, const at::Tensor& b, const std::string& what,
                    double tol = 1e-8) {
  if (!a.defined() || !b.defined()) return what + ": undefined; ";
  if (a.sizes() != b.sizes()) return what + ": shapes differ; ";
  const double gap = (a - b).abs().max().item<double>();
  return gap <= tol ? "" : what + ": differs by " + std::to_string(gap) + "; ";
}

}  // namespace

TEST_CASE("all_to_all over 2 Gloo ranks: rows to their ranks, gradients back, empty splits") {
  // Rank 0 has 3 rows and sends 1 to itself, 2 to rank 1; rank 1 has 2 rows and sends both to
  // rank 0, none to itself.
  const std::string failure = on_two_ranks("wb_a2a_", [](wb::Communicator& comm, int rank) {
    const auto f64 = at::TensorOptions().dtype(at::kDouble);
    const std::int64_t rows = rank == 0 ? 3 : 2;
    const at::Tensor x =
        (at::arange(rows, f64).unsqueeze(1) + 10 * rank + at::zeros({rows, 2}, f64))
            .requires_grad_(true);
    const std::vector<std::int64_t> send =
        rank == 0 ? std::vector<std::int64_t>{1, 2} : std::vector<std::int64_t>{2, 0};
    const std::vector<std::int64_t> recv =
        rank == 0 ? std::vector<std::int64_t>{1, 2} : std::vector<std::int64_t>{2, 0};
    const at::Tensor y = comm.all_to_all(x, send, recv);
    // Rank 0 receives its row 0, then rank 1's rows 0 and 1; rank 1 receives rank 0's rows 1, 2.
    const at::Tensor expected =
        rank == 0 ? at::tensor({0.0, 10.0, 11.0}, f64) : at::tensor({1.0, 2.0}, f64);
    std::string failure = compare(y.select(1, 0), expected, "values", 0);
    // Weight each received row by (its position + 1) on its receiver: the gradient of each
    // sent row is the weight it met there.
    const at::Tensor weight = at::arange(1, y.size(0) + 1, f64).unsqueeze(1);
    (y * weight).sum().backward();
    const at::Tensor grad = rank == 0 ? at::tensor({1.0, 1.0, 2.0}, f64)  // to 0 as 1st, to 1
                                      : at::tensor({2.0, 3.0}, f64);      // to 0 as 2nd and 3rd
    failure += compare(x.grad().select(1, 0), grad, "gradients", 0);
    try {
      comm.all_to_all(x, {1}, {1});
      failure += "a wrong number of splits was accepted; ";
    } catch (const std::invalid_argument&) {
    }
    return failure;
  });
  INFO(failure);
  CHECK(failure.empty());
}

namespace {

struct LayerCase {
  int silent;              // experts no token may choose (the last ones)
  double capacity_factor;  // 0 = dropless
};

constexpr std::int64_t kB = 6, kN = 3, kD = 6, kH = 8, kE = 4;

std::shared_ptr<wb::MoeLayer> make_layer(const LayerCase& c) {
  at::manual_seed(11);
  wb::Params p = wb_test::plugins().defaults(wb::Kind::Gate, "noisy_topk");
  p.set("k", std::int64_t{2});
  if (c.capacity_factor > 0) {
    p.set("eval_capacity_factor", c.capacity_factor);
    p.set("bpr", true);
    // One routing group per rank's tokens: capacity per group, as each rank computes it.
    p.set("group_size", kB / 2 * kN);
  }
  auto gate = wb_test::plugins().make_gate("noisy_topk", p, wb::GateShape{kD, kE, 0});
  auto layer = std::make_shared<wb::MoeLayer>(kD, kH, kE, gate);
  layer->to(at::kDouble);
  at::NoGradGuard no_grad;
  // The last input feature is 1 on every token; the silent experts' logits get -50 from it.
  at::Tensor w = layer->named_parameters()["gate.weight"];
  w.select(1, kD - 1).zero_();
  for (int e = 0; e < c.silent; ++e) w[kE - 1 - e][kD - 1] = -50.0;
  return layer;
}

struct Pass {
  at::Tensor y, experts, kept, x_grad;
  std::vector<at::Tensor> grads;  // w1, b1, w2, b2, gate weight
};

Pass run_layer(wb::MoeLayer& layer, const at::Tensor& input, const at::Tensor& upstream) {
  wb::RoutingContext context;
  context.training = false;  // no gate noise: both sides route alike
  const at::Tensor x = input.clone().requires_grad_(true);
  auto [y, routing] = layer.forward(x, context);
  (y * upstream).sum().backward();
  Pass p{y.detach(), routing.experts, routing.kept, x.grad(), {}};
  for (const at::Tensor* t : {&layer.w1_, &layer.b1_, &layer.w2_, &layer.b2_})
    p.grads.push_back(t->grad());
  p.grads.push_back(layer.named_parameters()["gate.weight"].grad());
  return p;
}

}  // namespace

TEST_CASE("expert-parallel MoE layer on 2 ranks equals one process on the joint batch") {
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  for (const LayerCase c : {LayerCase{1, 0}, LayerCase{2, 0}, LayerCase{1, 1.0}}) {
    CAPTURE(c.silent);
    CAPTURE(c.capacity_factor);
    at::manual_seed(5);
    at::Tensor joint = at::randn({kB, kN, kD}, f64);
    joint.select(2, kD - 1).fill_(1.0);
    const at::Tensor upstream = at::randn({kB, kN, kD}, f64);
    auto single_layer = make_layer(c);
    const at::Tensor full_w1 = single_layer->w1_.detach().clone();
    const Pass single = run_layer(*single_layer, joint, upstream);
    // The case is what it says: silent experts get no token; capacity drops some.
    CHECK(single.experts.ge(kE - c.silent).sum().item<std::int64_t>() == 0);
    CHECK(single.experts.eq(0).any().item<bool>());
    if (c.capacity_factor > 0) CHECK(single.kept.logical_not().any().item<bool>());

    const std::string failure = on_two_ranks("wb_ep_", [&](wb::Communicator& comm, int rank) {
      auto layer = make_layer(c);
      layer->shard_experts(comm);
      std::string failure;
      if (layer->w1_.size(0) != kE / 2 || layer->experts() != kE) failure += "shard shape; ";
      const std::int64_t half = kB / 2, local = kE / 2;
      const Pass mine = run_layer(*layer, joint.narrow(0, rank * half, half),
                                  upstream.narrow(0, rank * half, half));
      failure += compare(mine.y, single.y.narrow(0, rank * half, half), "output");
      failure += compare(mine.x_grad, single.x_grad.narrow(0, rank * half, half), "input grad");
      // Each rank holds the whole gradient of its experts (every rank's tokens reached them)...
      const char* names[] = {"w1 grad", "b1 grad", "w2 grad", "b2 grad"};
      for (int i = 0; i < 4; ++i)
        failure += compare(mine.grads[i], single.grads[i].narrow(0, rank * local, local), names[i]);
      // ... and its part of the gate's, which the ranks' sum completes (data parallel).
      failure += compare(comm.all_reduce_sum(mine.grads[4]), single.grads[4], "gate grad");
      layer->gather_experts();
      if (layer->expert_parallel() || !at::equal(layer->w1_, full_w1)) failure += "gathered; ";
      return failure;
    });
    INFO(failure);
    CHECK(failure.empty());
  }
}

TEST_CASE("train.expert_parallel: in the configuration and its id only when on") {
  const std::string base = R"(
[backbone]
plugin = "vit"
[[losses]]
plugin = "classify"
)";
  const wb::RunConfig plain = wb::parse_run_config(base, "f.toml", wb_test::plugins());
  CHECK(plain.toml.find("expert_parallel") == std::string::npos);
  CHECK_FALSE(plain.settings.train.expert_parallel);
  const wb::RunConfig off = wb::parse_run_config(base + "[train]\nexpert_parallel = false\n",
                                                 "f.toml", wb_test::plugins());
  CHECK(off.id == plain.id);
  const wb::RunConfig on = wb::parse_run_config(base + "[train]\nexpert_parallel = true\n",
                                                "f.toml", wb_test::plugins());
  CHECK(on.settings.train.expert_parallel);
  CHECK(on.toml.find("expert_parallel = true") != std::string::npos);
  CHECK(on.id != plain.id);
  // The canonical text reads back to the same configuration.
  CHECK(wb::parse_run_config(on.toml, "config.toml", wb_test::plugins()).id == on.id);
}
