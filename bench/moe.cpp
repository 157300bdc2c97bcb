// `workbench bench moe`: is sparse dispatch as cheap as the dense MLP it replaces? Times forward +
// backward of one MoE layer (E experts, top-k, expert hidden 4d / k; gate included, in training
// mode) against the FLOP-matched dense MLP of hidden 4d on the same tokens, written plainly
// (nn::Linear, GELU, nn::Linear under autograd) and as the vit backbone runs it (blocked_mlp),
// plus two slower dispatches for contrast: the same grouping recorded by plain autograd, and
// every expert on every token (masked). --profile adds the thread time of each phase of the
// expert kernel, MoE layer against the dense MLP through the same kernel; --precision bf16 runs
// the forwards under autocast; --device cuda runs it all on the GPU.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/cuda.h>
#include <torch/nn/modules/linear.h>

#include <sys/resource.h>
#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <functional>
#include <thread>

#include "common.h"
#include "compat/torch_compat.h"
#include "moe/dispatch.h"
#include "plugin/loader.h"
#include "process/threads.h"
#include "workbench/moe_layer.h"
#include "workbench/registry.h"

namespace wb::bench {

namespace {

namespace po = boost::program_options;

struct Timing {
  double forward_ms = 0, total_ms = 0;
  double page_faults = 0;  // minor page faults per forward + backward
};

long minor_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

struct Candidate {
  std::string name;
  std::function<void()> forward, backward;
};

// Runs the candidates round-robin, so that a change in machine load hits all of them alike;
// forward and forward + backward are timed separately, medians over the repeats. On a GPU each
// half ends with a synchronisation, so that the device has finished it.
std::vector<Timing> measure(int warmup, int repeats, const std::vector<Candidate>& candidates,
                            bool cuda) {
  using clock = std::chrono::steady_clock;
  auto sync = [cuda] {
    if (cuda) torch::cuda::synchronize();
  };
  const auto n = candidates.size();
  std::vector<std::vector<double>> fwd(n), total(n);
  std::vector<long> faults(n, 0);
  for (int i = 0; i < warmup + repeats; ++i)
    for (std::size_t c = 0; c < n; ++c) {
      const long f0 = minor_faults();
      const auto t0 = clock::now();
      candidates[c].forward();
      sync();
      const auto t1 = clock::now();
      candidates[c].backward();
      sync();
      const auto t2 = clock::now();
      if (i < warmup) continue;
      faults[c] += minor_faults() - f0;
      fwd[c].push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      total[c].push_back(std::chrono::duration<double, std::milli>(t2 - t0).count());
    }
  std::vector<Timing> out;
  for (std::size_t c = 0; c < n; ++c)
    out.push_back({median(fwd[c]), median(total[c]), double(faults[c]) / repeats});
  return out;
}

void clear_grads(const std::vector<at::Tensor>& tensors) {
  for (auto t : tensors) t.mutable_grad() = at::Tensor();
}

// Thread time per phase of the expert kernel for each candidate, ms per forward + backward: the
// candidates run round-robin `repeats` times each with the kernel's phase clocks on.
std::vector<std::vector<double>> profile_phases(int repeats,
                                                const std::vector<Candidate>& candidates,
                                                int& block_threads) {
  const auto phases = static_cast<int>(moe::Phase::count);
  std::vector<moe::PhaseTimes> times(candidates.size());
  for (int i = 0; i < repeats; ++i)
    for (std::size_t c = 0; c < candidates.size(); ++c) {
      moe::set_phase_times(&times[c]);
      candidates[c].forward();
      candidates[c].backward();
      moe::set_phase_times(nullptr);
    }
  std::vector<std::vector<double>> ms(candidates.size(), std::vector<double>(phases));
  block_threads = 0;
  for (const auto& t : times) block_threads = std::max(block_threads, t.threads.load());
  for (std::size_t c = 0; c < candidates.size(); ++c)
    for (int p = 0; p < phases; ++p) ms[c][p] = 1e-6 * double(times[c].ns[p]) / repeats;
  return ms;
}

}  // namespace

int bench_moe(const std::vector<std::string>& args) {
  LayerOptions o;  // the defaults: 256 images x 50 tokens, d 192, 16 experts, top-2
  std::int64_t block = 0;
  bool naive = true, profile = false;
  std::string precision = "fp32", device_name = "cpu";
  po::options_description opts("workbench bench moe [options]");
  opts.add_options()("help,h", "show this help");
  add_layer_options(opts, o);
  opts.add_options()("naive", po::value(&naive)->default_value(true),
                     "also time the masked loop (slow)")(
      "block", po::value(&block)->default_value(0),
      "rows per block of expert work on the CPU; 0 = the library default")(
      "profile", po::bool_switch(&profile),
      "also print the thread time of each phase of the expert kernel (CPU), MoE against dense")(
      "precision", po::value(&precision)->default_value("fp32"),
      "fp32, or bf16: the forwards under autocast (matrix products in bf16)")(
      "device", po::value(&device_name)->default_value("cpu"),
      "cpu or cuda (an error where this LibTorch sees no GPU)");
  if (!parse_options(opts, args)) return 0;
  check_layer_options(o, "moe");
  int threads = o.threads;
  const int repeats = o.repeats, warmup = o.warmup;
  const std::int64_t batch = o.batch, tokens = o.tokens, dim = o.dim, experts = o.experts, k = o.k;
  threads = resolve_threads(threads, 0);
  if (precision != "fp32" && precision != "bf16")
    throw std::invalid_argument("bench moe: --precision must be fp32 or bf16, not '" + precision +
                                "'");
  if (device_name != "cpu" && device_name != "cuda")
    throw std::invalid_argument("bench moe: --device must be cpu or cuda, not '" + device_name +
                                "'");
  if (device_name == "cuda" && !torch::cuda::is_available())
    throw std::runtime_error("bench moe: --device cuda, but this LibTorch sees no CUDA device");
  const c10::Device device(device_name == "cuda" ? c10::kCUDA : c10::kCPU);
  const bool bf16 = precision == "bf16";
  if (profile && device.is_cuda())
    throw std::invalid_argument("bench moe: --profile times the CPU kernel; use --device cpu");
  use_threads(threads);

  Registry registry;
  load_plugins(registry, o.plugin_paths);
  if (!registry.find(Kind::Gate, "noisy_topk"))
    throw std::runtime_error("bench moe: gate plugin 'noisy_topk' not found in the plugin path");
  Params gate_params = registry.defaults(Kind::Gate, "noisy_topk");
  gate_params.set("k", k);

  const std::int64_t hidden = 2 * dim * 2 / k;  // k active experts cost one dense MLP of 4d
  const std::int64_t T = batch * tokens;
  const at::Tensor x = at::randn({batch, tokens, dim}).to(device).requires_grad_(true);
  const at::Tensor probe = at::randn({batch, tokens, dim}).to(device);
  RoutingContext context;  // training: noise on, load loss computed

  torch::nn::Linear fc1(dim, 4 * dim), fc2(4 * dim, dim);
  MoeLayer layer(dim, hidden, experts,
                 registry.make_gate("noisy_topk", gate_params, {dim, experts, 0}));
  fc1->to(device), fc2->to(device), layer.to(device);
  std::vector<at::Tensor> params = layer.parameters();
  for (const auto& p : {x, fc1->weight, fc1->bias, fc2->weight, fc2->bias}) params.push_back(p);

  at::Tensor y, aux;
  // bf16: every forward under autocast, the backward outside it (as the trainer runs them).
  auto autocast = [&](auto forward) {
    return [&, forward] {
      compat::AutocastGuard guard(device.type(), bf16, at::kBFloat16);
      forward();
    };
  };
  auto dense_forward = [&] { y = fc2->forward(at::gelu(fc1->forward(x))); };
  // The dense MLP as the vit backbone runs it: wb::blocked_mlp, rows in cache-sized blocks.
  auto blocked_forward = [&] {
    y = blocked_mlp(x.reshape({T, dim}), fc1->weight.t(), fc1->bias, fc2->weight.t(), fc2->bias,
                    block)
            .view({batch, tokens, dim});
  };
  auto dense_backward = [&] {
    y.backward(probe);
    clear_grads(params);
  };
  auto aux_sum = [&](const Routing& r) {
    at::Tensor s = at::zeros({}, x.options());
    for (const auto& item : r.aux) s = s + item.second;
    return s;
  };
  auto route = [&] {
    GateInput in;
    in.image = at::arange(batch, x.options().dtype(at::kLong)).repeat_interleave(tokens);
    in.tokens_per_image = tokens;
    in.training = true;
    return layer.gate().route(x.reshape({T, dim}), in);
  };
  auto moe_forward = [&] {
    if (block == 0) {  // the layer itself
      auto out = layer.forward(x, context);
      y = out.first;
      aux = aux_sum(out.second);
      return;
    }
    const Routing r = route();
    y = moe::dispatch_combine_blocked(x.reshape({T, dim}), r, layer.w1_, layer.b1_, layer.w2_,
                                      layer.b2_, block)
            .view({batch, tokens, dim});
    aux = aux_sum(r);
  };
  auto moe_backward = [&] {
    torch::autograd::backward({y, aux}, {probe, at::ones({}, aux.options())});
    clear_grads(params);
  };
  // The other dispatches run on the same gate and weights, from the flattened tokens.
  using Dispatch = at::Tensor (*)(const at::Tensor&, const Routing&, const at::Tensor&,
                                  const at::Tensor&, const at::Tensor&, const at::Tensor&);
  auto variant = [&](Dispatch dispatch) {
    return [&, dispatch] {
      const Routing r = route();
      y = dispatch(x.reshape({T, dim}), r, layer.w1_, layer.b1_, layer.w2_, layer.b2_)
              .view({batch, tokens, dim});
      aux = aux_sum(r);
    };
  };

  std::vector<Candidate> candidates = {
      {"dense MLP, plain autograd", autocast(dense_forward), dense_backward},
      {"dense MLP, blocked (as in vit)", autocast(blocked_forward), dense_backward},
      {"MoE layer (grouped, blocked)", autocast(moe_forward), moe_backward},
      {"MoE, grouped, plain autograd", autocast(variant(&moe::dispatch_combine_autograd)),
       moe_backward},
      {"  of which the gate alone", autocast([&] {
         const Routing r = route();
         y = r.weights;
         aux = aux_sum(r);
       }),
       [&] {
         torch::autograd::backward({y, aux}, {at::ones_like(y), at::ones({}, aux.options())});
         clear_grads(params);
       }},
  };
  if (naive)
    candidates.push_back(
        {"MoE, naive masked loop", autocast(variant(&moe::dispatch_combine_masked)), moe_backward});
  const std::vector<Timing> times = measure(warmup, repeats, candidates, device.is_cuda());

  const double dropped =
      1.0 - layer.forward(x, context).second.kept.to(at::kFloat).mean().item<double>();
  std::printf(
      "bench moe: %lld images x %lld tokens = %lld tokens, d = %lld; MoE: %lld experts, top-%lld, "
      "expert hidden %lld, noisy_topk gate in training mode (dropped %.3f); dense MLP hidden "
      "%lld\n%s, device %s, %d threads, median of %d repeats after %d warm-up, candidates "
      "interleaved\n\n",
      (long long)batch, (long long)tokens, (long long)T, (long long)dim, (long long)experts,
      (long long)k, (long long)hidden, dropped, (long long)(4 * dim),
      bf16 ? "bf16 autocast" : "float32", device.str().c_str(), threads, repeats, warmup);
  std::printf("%-32s %11s %11s %9s %11s %12s\n", "", "forward ms", "fwd+bwd ms", "vs plain",
              "vs blocked", "page faults");
  for (std::size_t c = 0; c < candidates.size(); ++c)
    std::printf("%-32s %11.1f %11.1f %8.2fx %10.2fx %12.0f\n", candidates[c].name.c_str(),
                times[c].forward_ms, times[c].total_ms, times[c].total_ms / times[0].total_ms,
                times[c].total_ms / times[1].total_ms, times[c].page_faults);
  if (profile) {
    // The same kernel runs both: the dense MLP is one expert over all rows in order.
    const std::vector<Candidate> profiled = {candidates[1], candidates[2]};
    int block_threads = 0;
    const auto ms = profile_phases(repeats, profiled, block_threads);
    std::printf(
        "\nprofile: thread time per phase of the expert kernel, ms per forward + backward (mean "
        "of %d);\nthe blocks' phases add up the time of the %d threads that ran them, the others "
        "(plan, combine)\nare the calling thread's (their operations use every thread); the gate "
        "is its own row above\n\n%-34s %12s %12s %12s\n",
        repeats, block_threads, "phase", "dense blocked", "MoE layer", "MoE - dense");
    double sum_dense = 0, sum_moe = 0;
    for (int p = 0; p < static_cast<int>(moe::Phase::count); ++p) {
      std::printf("%-34s %12.1f %12.1f %+12.1f\n", moe::phase_name(static_cast<moe::Phase>(p)),
                  ms[0][p], ms[1][p], ms[1][p] - ms[0][p]);
      sum_dense += ms[0][p], sum_moe += ms[1][p];
    }
    std::printf("%-34s %12.1f %12.1f %+12.1f\n", "all phases", sum_dense, sum_moe,
                sum_moe - sum_dense);
  }
  return 0;
}

}  // namespace wb::bench
