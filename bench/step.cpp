// `workbench bench step --config FILE`: images per second of one whole training step (schedules,
// momentum update, online and momentum forwards of every view, losses, backward, AdamW) as the
// trainer runs it (wb::train_step), on one pre-made batch so that the loader is not measured.
// The batch is synthetic: normal pixels and MoCo-like random resized crop boxes and flips, so
// that OGAR's overlap matching sees realistic geometry. With --without NAME the same step is
// also timed without that loss (e.g. ogar), interleaved step by step with the full one so that
// load changes on the machine hit both alike; the difference is that loss's cost. With --loader
// the full step is also fed by the real loader (the configuration's data set, views and workers)
// in blocks that alternate with blocks on the pre-made batch; each loader block restarts the
// epoch, so its queue starts empty and any wait for a batch is inside the timed steps.
// With --inference the backbone's forward in evaluation mode (no gradient, gates without noise)
// is timed instead of the step: the testing speed of MoCE's Table 4. A configuration whose gates
// route by cluster (data.clusters, MoCE) gets random cluster ids in the synthetic batch.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/optim/adamw.h>

#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>

#include "cluster/cluster_file.h"
#include "common.h"
#include "config/experiment.h"
#include "dist/communicator.h"
#include "plugin/loader.h"
#include "process/threads.h"
#include "train/data_access.h"
#include "train/model.h"
#include "train/trainer.h"
#include "workbench/registry.h"
#include "workbench/views.h"

#ifdef WORKBENCH_HAVE_CUDA_ALLOCATOR_STATS
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace wb::bench {

namespace {

using Clock = std::chrono::steady_clock;

// H200 SXM, dense bf16 tensor-core peak (NVIDIA's data sheet: 1979 TFLOP/s with sparsity).
constexpr double kH200Bf16PeakFlops = 989.4e12;

// Peak bytes the CUDA caching allocator handed out on device 0 since the last reset, or -1.
double cuda_peak_bytes(bool reset) {
#ifdef WORKBENCH_HAVE_CUDA_ALLOCATOR_STATS
  if (reset) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(0);
    return 0;
  }
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  return static_cast<double>(stats.allocated_bytes[0].peak);  // [0]: all pools together
#else
  (void)reset;
  return -1;
#endif
}

// One timed step: the step, then a read of its loss, so that the device has finished it.
double timed_step(Model& model, torch::optim::Optimizer& optimizer, const Batch& batch,
                  std::int64_t step, const TrainSchedule& schedule, Communicator& comm) {
  const auto t0 = Clock::now();
  const StepResult r = train_step(model, optimizer, batch, step, schedule, comm);
  (void)r.loss.item<double>();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One timed inference: the backbone's evaluation-mode forward of the first view, then a read of
// a value of its output, so that the device has finished it.
double timed_forward(Model& model, const Batch& batch) {
  const auto t0 = Clock::now();
  {
    at::NoGradGuard no_grad;
    RoutingContext rc;
    rc.training = false;
    rc.view = at::zeros({batch.size()},
                        at::TensorOptions().dtype(at::kLong).device(batch.views[0].device()));
    rc.cluster = batch.cluster;
    const BackboneOutput out = model.backbone->forward(batch.views[0], rc);
    (void)out.cls.sum().item<double>();
  }
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

namespace po = boost::program_options;

// A RandomResizedCrop box as torchvision samples it (area scale 0.08-1, log-uniform aspect
// 3/4-4/3, ten tries, then the whole image), in normalised coordinates.
void crop_box(std::mt19937_64& rng, float* out) {
  std::uniform_real_distribution<double> u(0, 1);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double area = 0.08 + 0.92 * u(rng);
    const double ratio =
        std::exp(std::log(3.0 / 4) + (std::log(4.0 / 3) - std::log(3.0 / 4)) * u(rng));
    const double w = std::sqrt(area * ratio), h = std::sqrt(area / ratio);
    if (w <= 1 && h <= 1) {
      out[0] = static_cast<float>((1 - w) * u(rng));
      out[1] = static_cast<float>((1 - h) * u(rng));
      out[2] = static_cast<float>(w);
      out[3] = static_cast<float>(h);
      return;
    }
  }
  out[0] = out[1] = 0;
  out[2] = out[3] = 1;
}

Batch synthetic_batch(std::int64_t batch, int views, std::int64_t channels, std::int64_t size,
                      std::int64_t classes, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Batch b;
  for (int v = 0; v < views; ++v) {
    b.views.push_back(at::randn({batch, channels, size, size}));
    ViewGeometry g{at::empty({batch, 4}, at::kFloat), at::empty({batch}, at::kBool)};
    float* box = g.box.data_ptr<float>();
    bool* flip = g.flip.data_ptr<bool>();
    for (std::int64_t i = 0; i < batch; ++i) {
      crop_box(rng, box + 4 * i);
      flip[i] = (rng() & 1) != 0;
    }
    b.geometry.push_back(g);
  }
  b.labels = at::randint(classes, {batch}, at::kLong);
  b.index = at::arange(batch, at::kLong);
  return b;
}

// One configuration timed: its model and optimizer, its own batch (its views, its cluster ids)
// and schedule, and the seconds of its timed steps.
struct Candidate {
  std::string name;
  std::string without;  // --without: the loss left out of the first configuration, else empty
  Model model;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  Batch data;
  TrainSchedule schedule;
  std::vector<double> seconds;
  std::int64_t batch() const { return data.size(); }
};

// The image shape: the data section's image_size / channels where set, else the data set's
// native shape (Fashion-MNIST / IDX / digits 28 px grey, CIFAR 32 px colour).
DataShape image_shape(const DataSettings& d) {
  const bool grey = d.dataset == "fashion_mnist" || d.dataset == "idx" || d.dataset == "digits";
  return {d.channels > 0 ? d.channels : (grey ? 1 : 3),
          d.image_size > 0 ? d.image_size : (grey ? 28 : 32), 10};
}

Candidate make_candidate(const std::string& name, const RunConfig& config, Registry& registry,
                         Communicator& comm, c10::Device device, int timed_steps) {
  at::manual_seed(config.settings.run.seed);
  const DataShape shape = image_shape(config.settings.data);
  Candidate c;
  c.name = name;
  c.model = build_model(config, registry, shape, &comm);
  c.model.to(device);
  c.model.train(true);
  c.schedule = train_schedule(config.settings.train, 1000);
  c.schedule.total_steps = std::max<std::int64_t>(c.schedule.total_steps, timed_steps + 1);
  c.schedule.warmup_steps = 0;
  c.optimizer = std::make_unique<torch::optim::AdamW>(
      c.model.trainable_parameters(), torch::optim::AdamWOptions(c.schedule.peak_lr)
                                          .betas({c.schedule.beta1, c.schedule.beta2})
                                          .weight_decay(c.schedule.weight_decay));
  const std::int64_t batch = config.settings.train.batch;
  Batch host = synthetic_batch(batch, std::max(1, c.model.needs.views), shape.channels,
                               shape.image_size, shape.classes, 1234);
  if (!config.settings.data.clusters.empty()) {
    // MoCE: every image of the batch in a random cluster of the run's clustering.
    const std::int64_t clusters =
        read_cluster_file(cluster_file_path(config.settings.data.clusters)).centroids.size(0);
    host.cluster = at::randint(clusters, {batch}, at::kLong);
  }
  c.data = host.to(device);
  return c;
}

// The median over rounds of candidate j's time divided by the first candidate's in the same round:
// both timed back to back, so a change of the machine's load hits both alike.
double paired_ratio(const Candidate& first, const Candidate& c) {
  std::vector<double> r;
  for (std::size_t i = 0; i < c.seconds.size(); ++i) r.push_back(c.seconds[i] / first.seconds[i]);
  return median(r);
}

// The candidates' table: median time, images/s and the paired ratio to the first.
void print_table(const std::vector<Candidate>& candidates, const char* what) {
  std::printf(
      "\n| candidate | ms per %s (median) | images/s | time / first (paired median) |\n"
      "|---|---|---|---|\n",
      what);
  for (const auto& c : candidates) {
    const double m = median(c.seconds);
    std::printf("| %s | %.1f | %.1f | %.3f |\n", c.name.c_str(), 1e3 * m, c.batch() / m,
                paired_ratio(candidates.front(), c));
  }
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : " + ") + n;
  return out;
}

// The full step fed by the real loader against the same step on the pre-made batch, in
// alternating blocks (loader first). Means, not medians: a loader that starves the trainer shows
// up as a few long waits, which a median would hide.
void loader_comparison(const RunConfig& config, Candidate& c, const Batch& premade,
                       const TrainSchedule& schedule, Communicator& comm, int steps, int blocks,
                       int workers, int warmup) {
  auto data = open_data(config.settings.data, Split::Train);
  LoaderOptions options;
  options.batch_size = config.settings.train.batch;
  options.workers = workers >= 0 ? workers : config.settings.run.workers;
  options.seed = config.settings.run.seed;
  Loader loader(data, train_recipes(config, c.model.needs.views, data->image_size()), options);
  double loader_s = 0, premade_s = 0;
  std::vector<double> loader_steps, premade_steps;
  std::int64_t step = warmup + steps, epoch = 0;
  for (int block = 0; block < blocks; ++block) {
    loader.start_epoch(epoch++);
    for (int i = 0; i < steps; ++i, ++step) {
      const auto t0 = Clock::now();
      std::optional<Batch> b = loader.next();
      if (!b) {
        loader.start_epoch(epoch++);
        b = loader.next();
        if (!b) throw std::runtime_error("the loader gives no batch (data set smaller than one)");
      }
      (void)train_step(c.model, *c.optimizer, b->to(premade.views[0].device()), step, schedule,
                       comm)
          .loss.item<double>();
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      loader_s += s;
      loader_steps.push_back(s);
    }
    for (int i = 0; i < steps; ++i, ++step) {
      const double s = timed_step(c.model, *c.optimizer, premade, step, schedule, comm);
      premade_s += s;
      premade_steps.push_back(s);
    }
  }
  const double n = static_cast<double>(steps) * blocks;
  std::printf("\nreal loader (%s, %d workers) against the pre-made batch, %d blocks of %d steps:\n",
              data->describe().c_str(), options.workers, blocks, steps);
  std::printf("| fed by | ms per step (mean) | ms per step (median) |\n|---|---|---|\n");
  std::printf("| loader | %.1f | %.1f |\n", 1e3 * loader_s / n, 1e3 * median(loader_steps));
  std::printf("| pre-made batch | %.1f | %.1f |\n", 1e3 * premade_s / n,
              1e3 * median(premade_steps));
  std::printf("loader_ratio %.3f\n", loader_s / premade_s);
}

}  // namespace

int bench_step(const Args& args) {
  po::options_description opts("workbench bench step --config FILE [options]");
  std::string file, profile, device_name;
  std::vector<std::string> sets, plugin_paths, without, versus;
  int steps = 20, warmup = 3, threads = 0, workers = -1, blocks = 3;
  bool with_loader = false, inference = false;
  std::vector<std::int64_t> point_indices;
  opts.add_options()("help,h", "show this help")(
      "config", po::value(&file), "experiment file; its first point is timed (see --point)")(
      "point", po::value(&point_indices)->composing(),
      "0-based index of a point to time (default 0); repeatable: every point is timed, "
      "interleaved step by step with the first")(
      "vs", po::value(&versus)->composing(),
      "also time the first point with these overrides, 'key=value[;key=value...]' (repeatable), "
      "interleaved with it: e.g. --vs 'backbone.experts=0;backbone.moe_every=0'")(
      "profile", po::value(&profile), "apply [profile.NAME] of the file first")(
      "set", po::value(&sets)->composing(), "key=value override, as for 'workbench run'")(
      "steps", po::value(&steps), "timed steps (default 20); the median is reported")(
      "warmup", po::value(&warmup), "untimed steps first (default 3)")(
      "threads", po::value(&threads), "intra-op threads (default: all cores)")(
      "without", po::value(&without)->composing(),
      "also time the step without this loss plugin (repeatable), interleaved with the full one")(
      "plugin-path", po::value(&plugin_paths)->composing(), "extra plugin folder or file")(
      "loader", po::bool_switch(&with_loader),
      "also time the full step fed by the real loader against the pre-made batch")(
      "inference", po::bool_switch(&inference),
      "time the backbone's evaluation-mode forward (no gradient) instead of the training step")(
      "workers", po::value(&workers), "loader threads for --loader (default: the config's)")(
      "blocks", po::value(&blocks), "--loader: alternating blocks of --steps steps each (3)")(
      "device", po::value(&device_name),
      "cpu or cuda (default: the configuration's device; auto = cuda when available)");
  if (!parse_options(opts, args)) return 0;
  if (file.empty()) {
    std::cerr << "error: bench step needs --config FILE\n" << opts;
    return 2;
  }
  if (steps < 1 || warmup < 0) throw std::invalid_argument("--steps must be >= 1, --warmup >= 0");
  if (inference && (with_loader || !without.empty()))
    throw std::invalid_argument("--inference times the forward alone: no --loader, no --without");
  threads = resolve_threads(threads, 0);
  use_threads(threads);

  Registry registry;
  load_plugins(registry, plugin_paths);
  const Experiment experiment = load_experiment(file, registry, {sets, profile});
  if (point_indices.empty()) point_indices.push_back(0);
  for (const auto i : point_indices)
    if (i < 0 || i >= static_cast<std::int64_t>(experiment.points.size()))
      throw std::invalid_argument("--point " + std::to_string(i) + ": " + file + " has " +
                                  std::to_string(experiment.points.size()) + " points");
  const auto point_at = [&](std::int64_t i) -> const Point& {
    return experiment.points[static_cast<std::size_t>(i)];
  };
  const Point& point = point_at(point_indices.front());
  const RunConfig& base = point.config;
  auto comm = make_single_process_communicator();
  const c10::Device device =
      pick_device(device_name.empty() ? base.settings.run.device : device_name);

  // The first point; the same without each --without loss; every further --point; the first
  // point with each --vs set of overrides.
  std::vector<Candidate> candidates;
  const auto add = [&](const std::string& name, const RunConfig& config) -> Candidate& {
    candidates.push_back(make_candidate(name, config, registry, *comm, device, warmup + steps));
    return candidates.back();
  };
  std::vector<std::string> loss_names;
  for (const auto& l : base.losses) loss_names.push_back(l.plugin);
  add(point.label + ": " + join(loss_names), base);
  for (const auto& name : without) {
    RunConfig reduced = base;
    const auto before = reduced.losses.size();
    reduced.losses.erase(std::remove_if(reduced.losses.begin(), reduced.losses.end(),
                                        [&](const PluginConfig& l) { return l.plugin == name; }),
                         reduced.losses.end());
    if (reduced.losses.size() == before)
      throw std::invalid_argument("--without " + name + ": the configuration has no such loss");
    std::vector<std::string> kept;
    for (const auto& l : reduced.losses) kept.push_back(l.plugin);
    add(join(kept) + " (without " + name + ")", reduced).without = name;
  }
  for (std::size_t i = 1; i < point_indices.size(); ++i)
    add(point_at(point_indices[i]).label, point_at(point_indices[i]).config);
  for (const auto& overrides : versus) {
    std::vector<std::string> more = sets;
    for (std::size_t from = 0; from <= overrides.size();) {
      const auto to = std::min(overrides.find(';', from), overrides.size());
      if (to > from) more.push_back(overrides.substr(from, to - from));
      from = to + 1;
    }
    const Experiment changed = load_experiment(file, registry, {more, profile});
    add(point.label + " with " + overrides,
        changed.points[static_cast<std::size_t>(point_indices.front())].config);
  }

  const Candidate& first = candidates.front();
  const ModelCost cost = first.model.backbone->cost();
  const int views = std::max(1, first.model.needs.views);
  const DataShape shape = image_shape(base.settings.data);
  std::printf("config: %s, point %lld of %zu (%s)\n", file.c_str(),
              static_cast<long long>(point_indices.front()), experiment.points.size(),
              point.label.c_str());
  std::printf(
      "backbone %s: %.2f M parameters, %.1f M MACs per image; batch %lld x %d views of "
      "%lldx%lld; %d threads; device %s, precision %s; %d warm-up + %d timed %s, median\n",
      base.backbone.plugin.c_str(), cost.parameters / 1e6, cost.flops_per_image / 1e6,
      static_cast<long long>(first.batch()), views, static_cast<long long>(shape.image_size),
      static_cast<long long>(shape.image_size), threads, device.str().c_str(),
      first.schedule.bf16 ? "bf16" : "fp32", warmup, steps,
      inference ? "evaluation-mode forwards (--inference)" : "steps");
  for (std::size_t i = 1; i < candidates.size(); ++i) {
    const ModelCost c = candidates[i].model.backbone->cost();
    std::printf("candidate %zu, %s: %.2f M parameters, %.1f M MACs per image, batch %lld\n", i,
                candidates[i].name.c_str(), c.parameters / 1e6, c.flops_per_image / 1e6,
                static_cast<long long>(candidates[i].batch()));
  }
  std::fflush(stdout);

  if (device.is_cuda()) cuda_peak_bytes(true);
  if (inference)
    for (auto& c : candidates) c.model.train(false);
  for (int i = 0; i < warmup + steps; ++i)
    for (auto& c : candidates) {
      const double s = inference ? timed_forward(c.model, c.data)
                                 : timed_step(c.model, *c.optimizer, c.data, i, c.schedule, *comm);
      if (i >= warmup) c.seconds.push_back(s);
    }

  print_table(candidates, inference ? "forward" : "step");
  // A loss's cost: the median of the step-by-step differences (full minus reduced, timed back to
  // back), which cancels slow drifts of the machine's load better than a difference of medians.
  const double full = median(first.seconds);
  for (const auto& c : candidates) {
    if (c.without.empty()) continue;
    std::vector<double> diff;
    for (std::size_t j = 0; j < c.seconds.size(); ++j)
      diff.push_back(first.seconds[j] - c.seconds[j]);
    std::sort(diff.begin(), diff.end());
    const double d = median(diff), lo = diff[diff.size() / 4], hi = diff[(3 * diff.size()) / 4];
    std::printf(
        "cost of %s: %.1f ms per step = %.2f %% of the full step (median of paired differences; "
        "quartiles %.1f / %.1f ms)\n",
        c.without.c_str(), 1e3 * d, 100 * d / full, 1e3 * lo, 1e3 * hi);
  }
  std::printf("images_per_s %.2f\n", first.batch() / full);
  if (inference) return 0;
  // Model FLOPs of a step per image: each view's online forward and backward (3 forwards' worth)
  // and its momentum forward, 2 FLOPs per multiply-accumulate of the backbone (heads left out).
  const bool momentum = first.model.momentum != nullptr;
  const double flops = 2.0 * cost.flops_per_image * views * (3 + (momentum ? 1 : 0));
  std::printf("model_tflops_per_s %.1f (%.2f GFLOP per image)\n",
              first.batch() / full * flops / 1e12, flops / 1e9);
  if (device.is_cuda()) {
    std::printf("mfu_h200_bf16 %.3f (of %.1f TFLOP/s, H200 SXM dense bf16)\n",
                first.batch() / full * flops / kH200Bf16PeakFlops, kH200Bf16PeakFlops / 1e12);
    const double peak = cuda_peak_bytes(false);
    if (peak >= 0)
      std::printf("peak_memory_gib %.2f (CUDA caching allocator, all candidates)\n",
                  peak / (1024.0 * 1024 * 1024));
    else
      std::printf("peak_memory_gib n/a (this LibTorch has no CUDA allocator statistics)\n");
  }
  if (with_loader)
    loader_comparison(base, candidates.front(), first.data, first.schedule, *comm, steps, blocks,
                      workers, warmup);
  return 0;
}

}  // namespace wb::bench
