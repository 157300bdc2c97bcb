// `workbench bench ep`: the all-to-all's share of an expert-parallel MoE layer's time. Two ranks
// (this process and a forked one, Gloo over loopback through a file store) each hold E/2
// experts and run forward + backward of the layer on their own tokens; rank 0 reports the median
// time of the whole layer and the part spent inside the all-to-all exchanges (the counts, the
// tokens, the outputs, and the backward's two), which includes waiting for the other rank.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <sys/wait.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "common.h"
#include "dist/communicator.h"
#include "plugin/loader.h"
#include "process/threads.h"
#include "workbench/moe_layer.h"
#include "workbench/registry.h"

namespace wb::bench {

namespace {

namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;

double g_exchange_ms = 0;  // time inside all_to_all since the last reset, both directions

double since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// The inner communicator's exchange in both directions, timed.
class TimedAllToAll : public torch::autograd::Function<TimedAllToAll> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            std::int64_t comm, std::vector<std::int64_t> send,
                            std::vector<std::int64_t> recv) {
    ctx->saved_data["comm"] = comm;
    ctx->saved_data["send"] = send;
    ctx->saved_data["recv"] = recv;
    const auto t0 = Clock::now();
    at::Tensor y = reinterpret_cast<Communicator*>(comm)->all_to_all(x.detach(), send, recv);
    g_exchange_ms += since(t0);
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    auto* comm = reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
    const auto t0 = Clock::now();
    at::Tensor g = comm->all_to_all(grad[0], ctx->saved_data["recv"].toIntVector(),
                                    ctx->saved_data["send"].toIntVector());
    g_exchange_ms += since(t0);
    return {g, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class TimedComm final : public Communicator {
 public:
  explicit TimedComm(Communicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int world_size() const override { return inner_.world_size(); }
  at::Tensor all_gather(const at::Tensor& t) override { return inner_.all_gather(t); }
  void all_reduce_mean(std::vector<at::Tensor>& t) override { inner_.all_reduce_mean(t); }
  void barrier() override { inner_.barrier(); }
  at::Tensor all_to_all(const at::Tensor& x, const std::vector<std::int64_t>& send,
                        const std::vector<std::int64_t>& recv) override {
    return TimedAllToAll::apply(x, reinterpret_cast<std::int64_t>(&inner_), send, recv);
  }

 private:
  Communicator& inner_;
};

}  // namespace

int bench_expert_parallel(const Args& args) {
  LayerOptions o;
  o.threads = 1, o.repeats = 20, o.warmup = 3, o.batch = 64, o.tokens = 65;
  po::options_description opts("workbench bench ep [options]");
  opts.add_options()("help,h", "show this help");
  add_layer_options(opts, o, {"intra-op threads per rank", "images per rank", "experts E (even)"});
  if (!parse_options(opts, args)) return 0;
  check_layer_options(o, "ep");
  if (o.experts % 2) throw std::invalid_argument("bench ep: --experts must be even");
  const int threads = o.threads, repeats = o.repeats, warmup = o.warmup;
  const std::int64_t batch = o.batch, tokens = o.tokens, dim = o.dim, experts = o.experts, k = o.k;

  const std::filesystem::path store =
      std::filesystem::temp_directory_path() / ("wb_bench_ep_" + std::to_string(getpid()));
  std::filesystem::remove(store);
  std::fflush(stdout);
  const pid_t child = fork();  // before any thread pool exists
  if (child < 0) throw std::runtime_error("bench ep: fork failed");
  const int rank = child == 0 ? 1 : 0;
  use_threads(threads);
  Registry registry;
  load_plugins(registry, o.plugin_paths);
  Params gate_params = registry.defaults(Kind::Gate, "noisy_topk");
  gate_params.set("k", k);
  at::manual_seed(1);  // the same layer on both ranks
  MoeLayer layer(dim, 2 * dim * 2 / k, experts,
                 registry.make_gate("noisy_topk", gate_params, {dim, experts, 0}));
  auto comm = make_c10d_communicator(store.string(), rank, 2, c10::Device(c10::kCPU));
  TimedComm timed(*comm);
  layer.shard_experts(timed);
  at::manual_seed(100 + rank);  // each rank its own tokens
  const at::Tensor x = at::randn({batch, tokens, dim}).requires_grad_(true);
  const at::Tensor probe = at::randn({batch, tokens, dim});
  RoutingContext context;  // training: gate noise on, as in a training step

  std::vector<double> total, exchange;
  for (int i = 0; i < warmup + repeats; ++i) {
    comm->barrier();  // both ranks start together
    g_exchange_ms = 0;
    const auto t0 = Clock::now();
    auto [y, routing] = layer.forward(x, context);
    (y * probe).sum().backward();
    const double ms = since(t0);
    if (i < warmup) continue;
    total.push_back(ms);
    exchange.push_back(g_exchange_ms);
  }
  comm->barrier();
  if (child == 0) _exit(0);
  int status = 0;
  waitpid(child, &status, 0);
  std::filesystem::remove(store);
  const double t = median(total), a = median(exchange);
  std::printf(
      "expert-parallel MoE layer, 2 ranks (Gloo, loopback), %d thread(s) each: %lld tokens per "
      "rank, d %lld, E %lld (%lld per rank), top-%lld, forward + backward\n",
      threads, static_cast<long long>(batch * tokens), static_cast<long long>(dim),
      static_cast<long long>(experts), static_cast<long long>(experts / 2),
      static_cast<long long>(k));
  std::printf("rank 0, median of %d: layer %.2f ms, inside all_to_all %.2f ms (%.1f %%)\n", repeats,
              t, a, 100.0 * a / t);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

}  // namespace wb::bench
