#include "train/trainer.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>
#include <torch/optim/adamw.h>

#include <chrono>
#include <cmath>
#include <sstream>

#include "compat/torch_compat.h"
#include "config/tree.h"  // format_real
#include "h5/metrics.h"
#include "train/checkpoint.h"
#include "train/routing_stats.h"
#include "train/schedule.h"
#include "workbench/comm.h"
#include "workbench/masking.h"
#include "workbench/stop.h"

namespace wb {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Running means of everything logged between two log points. Tensor metrics are summed on their
// device and read back together at the log point: one transfer per device and interval, where an
// .item() per metric and step would stall a GPU every step (docs/design.md, "No host sync").
class Accumulator {
 public:
  void add(const std::string& name, const Metric& m) {
    if (!m.is_tensor()) {
      auto& [sum, n] = numbers_[name];
      sum += m.value();
      ++n;
      return;
    }
    auto& [sum, n] = tensors_[name];
    const at::Tensor v = m.tensor().to(at::kDouble).reshape({});
    sum = sum.defined() ? sum + v : v;
    ++n;
  }
  // Writes the means and returns them by name.
  std::map<std::string, double> write(MetricsFile& metrics, std::int64_t step) {
    std::map<std::string, double> means;
    for (const auto& [name, s] : numbers_) means[name] = s.first / s.second;
    std::map<std::string, std::vector<std::string>> by_device;
    for (const auto& [name, s] : tensors_) by_device[s.first.device().str()].push_back(name);
    for (const auto& [device, names] : by_device) {
      std::vector<at::Tensor> sums;
      for (const auto& name : names) sums.push_back(tensors_[name].first);
      const at::Tensor host = at::stack(sums).to(at::kCPU);  // the interval's one read
      const double* v = host.data_ptr<double>();
      for (std::size_t i = 0; i < names.size(); ++i)
        means[names[i]] = v[i] / static_cast<double>(tensors_[names[i]].second);
    }
    for (const auto& [name, v] : means) metrics.scalar(name, step, v);
    numbers_.clear();
    tensors_.clear();
    return means;
  }

 private:
  std::map<std::string, std::pair<double, std::int64_t>> numbers_;
  std::map<std::string, std::pair<at::Tensor, std::int64_t>> tensors_;
};

// The first step whose total loss was not finite, remembered on the device (a few scalar kernels
// per step, no read): check() reads it once per log point and before each checkpoint, so a NaN
// is still reported with its step and terms, and never reaches a checkpoint.
class FiniteWatch {
 public:
  void observe(const at::Tensor& loss, const at::Tensor& terms, std::int64_t step) {
    at::NoGradGuard no_grad;
    const at::Tensor row = at::cat({terms, loss.reshape({1})}).to(at::kDouble);
    if (!first_.defined()) {
      first_ = at::full({}, -1, row.options().dtype(at::kLong));
      row_ = at::zeros_like(row);
    }
    const at::Tensor fresh = at::logical_and(first_.lt(0), at::isfinite(loss).logical_not());
    // Reported 1-based, the count of steps done when it happened (as the metrics' step axis).
    first_ = at::where(fresh, at::full({}, step + 1, first_.options()), first_);
    row_ = at::where(fresh, row, row_);
  }
  void check(const std::vector<std::string>& names) const {
    if (!first_.defined()) return;
    const at::Tensor host = at::cat({first_.to(at::kDouble).reshape({1}), row_}).to(at::kCPU);
    const double* v = host.data_ptr<double>();
    if (v[0] < 0) return;
    std::ostringstream terms;
    for (std::size_t i = 0; i < names.size(); ++i)
      terms << (i ? ", " : "") << names[i] << " = " << v[1 + i];
    throw std::runtime_error("loss is " + std::to_string(v[1 + names.size()]) + " at step " +
                             std::to_string(static_cast<std::int64_t>(v[0])) + " (" + terms.str() +
                             "); the last checkpoint and metrics are kept");
  }

 private:
  at::Tensor first_;  // int64 scalar: -1 while every loss was finite
  at::Tensor row_;    // the loss terms, then the total, at that step
};

void log_routing_stats(MetricsFile& metrics, const BackboneOutput& out, std::int64_t step) {
  if (out.routings.empty()) return;
  std::vector<at::Tensor> rows;
  for (const auto& routing : out.routings) rows.push_back(routing_stats_tensor(routing));
  const at::Tensor host = at::cat(rows).to(at::kCPU);  // every layer in one read
  std::int64_t offset = 0;
  for (std::size_t i = 0; i < out.routings.size(); ++i) {
    const std::int64_t experts = out.routings[i].num_experts();
    const RoutingStats s = routing_stats_from(host.narrow(0, offset, experts + 5), experts);
    offset += experts + 5;
    const std::string prefix = "routing/moe" + std::to_string(i) + "/";
    metrics.array(prefix + "expert_load", step, s.expert_load);
    metrics.scalar(prefix + "load_entropy", step, s.load_entropy);
    metrics.scalar(prefix + "token_entropy", step, s.token_entropy);
    metrics.scalar(prefix + "importance_cv2", step, s.importance_cv2);
    metrics.scalar(prefix + "load_cv2", step, s.load_cv2);
    metrics.scalar(prefix + "dropped", step, s.dropped);
  }
}

void all_reduce_gradients(Communicator& comm, const std::vector<at::Tensor>& params) {
  if (comm.world_size() == 1) return;
  std::vector<at::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return;
  // One flat buffer: one collective per step instead of one per parameter.
  std::vector<at::Tensor> flats;
  for (auto& g : grads) flats.push_back(g.reshape({-1}));
  at::Tensor flat = at::cat(flats);
  std::vector<at::Tensor> buffer{flat};
  comm.all_reduce_mean(buffer);
  std::int64_t offset = 0;
  for (auto& g : grads) {
    const auto n = g.numel();
    g.copy_(buffer[0].narrow(0, offset, n).view_as(g));
    offset += n;
  }
}

// Expert parallelism: each rank's expert gradients arrive through the exchange's backward as
// the sum over all ranks' losses, not averaged like the rest: 1/N makes them the gradient of the
// mean of the ranks' losses, as all_reduce_gradients makes every other gradient. A rank whose
// experts got no token has no gradient yet: zeros, as one process has for such an expert.
void scale_sharded_gradients(const std::vector<at::Tensor>& sharded, std::int64_t shards) {
  at::NoGradGuard no_grad;
  for (auto p : sharded) {
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    p.grad().div_(static_cast<double>(shards));
  }
}

bool contains(const std::vector<at::Tensor>& list, const at::Tensor& t) {
  for (const auto& x : list)
    if (x.is_same(t)) return true;
  return false;
}

// torch::nn::utils::clip_grad_norm_ without its return value, which LibTorch reads back with
// .item(): the total L2 norm and the scale stay on the device.
// Sharded gradients contribute every rank's part of the norm.
void clip_gradients(const std::vector<at::Tensor>& params, double max_norm,
                    const std::vector<at::Tensor>& sharded, Communicator& comm) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> norms;
  at::Tensor shard_squares;
  for (const auto& p : params) {
    if (!p.grad().defined()) continue;
    const at::Tensor n = p.grad().norm(2).to(at::kFloat).reshape({1});
    if (contains(sharded, p))
      shard_squares = shard_squares.defined() ? shard_squares + n * n : n * n;
    else
      norms.push_back(n);
  }
  if (shard_squares.defined()) norms.push_back(comm.all_reduce_sum(shard_squares).sqrt());
  if (norms.empty()) return;
  const at::Tensor total = at::cat(norms).norm(2);
  const at::Tensor scale = (max_norm / (total + 1e-6)).clamp_max(1.0);
  for (const auto& p : params)
    if (p.grad().defined()) p.grad().mul_(scale.to(p.grad().scalar_type()));
}

// keep: one mask per view (MAE), or empty for none; the online and momentum encoders see the
// same visible patches of a view.
std::vector<BackboneOutput> forward_views(Backbone& backbone, const Batch& batch, int views,
                                          bool training, const std::vector<at::Tensor>& keep,
                                          bool expert_outputs = false) {
  std::vector<BackboneOutput> out;
  for (int v = 0; v < views; ++v) {
    RoutingContext context;
    context.view = at::full({batch.size()}, v,
                            at::TensorOptions().dtype(at::kLong).device(batch.views[v].device()));
    context.cluster = batch.cluster;
    context.training = training;
    if (!keep.empty()) context.keep = keep[static_cast<std::size_t>(v)];
    context.expert_outputs = expert_outputs;
    out.push_back(backbone.forward(batch.views[v], context));
    if (context.keep.defined() && out.back().patches.size(1) != context.keep.size(1))
      throw std::runtime_error(
          "a loss asks for masked inputs (mask_ratio) but the backbone "
          "encoded every patch: it ignores RoutingContext::keep");
    out.back().keep = context.keep;
  }
  return out;
}

// MAE's per-image random masks for every view, or none when no loss asks for them.
std::vector<at::Tensor> draw_masks(const Model& model, const Batch& batch) {
  std::vector<at::Tensor> keep;
  if (model.needs.mask_ratio <= 0) return keep;
  const std::int64_t grid = model.backbone->patch_grid();
  for (int v = 0; v < model.needs.views; ++v)
    keep.push_back(random_keep(batch.size(), grid * grid, model.needs.mask_ratio,
                               at::TensorOptions().device(batch.views[v].device())));
  return keep;
}

}  // namespace

TrainSchedule train_schedule(const TrainSettings& t, std::int64_t batches_per_epoch) {
  TrainSchedule s;
  s.batches_per_epoch = std::max<std::int64_t>(1, batches_per_epoch);
  // epochs = 0 (and steps = 0) trains nothing: the initial weights ([init]) are evaluated.
  // The products are formed in double and bounded before they become step counts, so that a
  // huge epoch count is refused instead of overflowing (or wrapping to a few steps).
  const double bpe = static_cast<double>(s.batches_per_epoch);
  const double steps = t.steps > 0 ? static_cast<double>(t.steps) : t.epochs * bpe;
  if (!(steps <= static_cast<double>(kMaxTrainSteps))) {
    const std::string what = t.steps > 0
                                 ? "train.steps = " + std::to_string(t.steps)
                                 : "train.epochs = " + config::format_real(t.epochs) + " (x " +
                                       std::to_string(s.batches_per_epoch) + " batches per epoch)";
    throw std::invalid_argument(what + (std::isnan(steps)
                                            ? " is not a number of steps"
                                            : " is more than " + std::to_string(kMaxTrainSteps) +
                                                  " steps, the most a run may train"));
  }
  s.total_steps = t.steps > 0     ? t.steps
                  : t.epochs == 0 ? 0
                                  : std::max<std::int64_t>(1, std::llround(steps));
  const double warmup = t.warmup_epochs * bpe;
  if (!std::isfinite(warmup) || warmup < 0)
    throw std::invalid_argument("train.warmup_epochs = " + config::format_real(t.warmup_epochs) +
                                " is not a finite number of epochs >= 0");
  s.warmup_steps = warmup >= static_cast<double>(s.total_steps)
                       ? s.total_steps
                       : static_cast<std::int64_t>(std::llround(warmup));
  s.images_per_step = t.batch;  // train.batch is the global batch: each rank loads batch / ranks
  const double scale = t.linear_lr_scaling ? static_cast<double>(t.batch) / 256.0 : 1.0;
  s.peak_lr = t.base_lr * scale;
  s.min_lr = t.min_lr;
  s.weight_decay = t.weight_decay;
  s.beta1 = t.beta1;
  s.beta2 = t.beta2;
  s.clip_grad = t.clip_grad;
  s.m0 = t.momentum;
  s.bf16 = t.bf16;
  s.log_every = std::max<std::int64_t>(1, t.log_every);
  s.stats_every = t.stats_every;
  s.checkpoint_every = t.checkpoint_every > 0 ? t.checkpoint_every : s.batches_per_epoch;
  return s;
}

StepResult train_step(Model& model, torch::optim::Optimizer& optimizer, const Batch& batch,
                      std::int64_t step, const TrainSchedule& s, Communicator& comm) {
  StepResult result;
  const double lr = learning_rate(step, s.total_steps, s.warmup_steps, s.peak_lr, s.min_lr);
  for (auto& group : optimizer.param_groups())
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  result.logged["train/lr"] = lr;

  StepState st;
  st.batch = &batch;
  st.step = step;
  st.total_steps = s.total_steps;
  st.progress = static_cast<double>(step) / s.total_steps;
  st.comm = &comm;
  if (model.momentum) {
    // Before the key forward, as MoCo v3 does.
    const double m = momentum(step, s.total_steps, s.m0);
    model.momentum_update(m);
    for (auto& loss : model.losses) loss->momentum_update(m);
    result.logged["train/momentum"] = m;
  }
  // Nothing in here reads the device: values stay tensors until the log point (a test counts the
  // reads of a step).
  const std::vector<at::Tensor> keep = draw_masks(model, batch);
  at::Tensor total;
  std::vector<at::Tensor> terms;
  {
    // bf16: the forward passes and the losses under autocast, the backward and the optimizer
    // outside it, on the fp32 weights (docs/methods.md §1).
    const c10::DeviceType device = batch.views.at(0).device().type();
    compat::AutocastGuard autocast(device, s.bf16, at::kBFloat16);
    st.online = forward_views(*model.backbone, batch, model.needs.views, true, keep,
                              model.needs.expert_outputs);
    if (model.momentum) {
      at::NoGradGuard no_grad;
      st.momentum = forward_views(*model.momentum, batch, model.needs.views, true, keep);
    }
    for (std::size_t i = 0; i < model.losses.size(); ++i) {
      LossResult r = model.losses[i]->compute(st);
      r.value = r.value.to(at::promote_types(r.value.scalar_type(), at::kFloat));
      terms.push_back(r.value.detach().to(at::kFloat).reshape({1}));
      result.logged["loss/" + model.loss_names[i] + "/total"] = Metric(r.value);
      for (const auto& [k, x] : r.metrics)
        result.logged["loss/" + model.loss_names[i] + "/" + k] = x;
      total = total.defined() ? total + r.value : r.value;
    }
  }
  result.loss = total.detach();
  result.terms = at::cat(terms);
  optimizer.zero_grad();
  // With every loss weight at 0 there is nothing to differentiate, but the step still counts.
  if (total.requires_grad()) total.backward();
  std::vector<at::Tensor> params, replicated;
  for (auto& group : optimizer.param_groups())
    for (auto& p : group.params()) {
      params.push_back(p);
      if (!contains(model.sharded, p)) replicated.push_back(p);
    }
  all_reduce_gradients(comm, replicated);
  if (!model.sharded.empty()) scale_sharded_gradients(model.sharded, model.expert_shards);
  if (s.clip_grad > 0) clip_gradients(params, s.clip_grad, model.sharded, comm);
  optimizer.step();
  result.logged["train/loss"] = Metric(result.loss);
  result.online = std::move(st.online);
  return result;
}

void train(const TrainOutput& output, Model& model, Loader& loader, Communicator& comm,
           c10::Device device, const TrainSchedule& s, const std::filesystem::path& checkpoint) {
  MetricsFile& metrics = *output.metrics;
  spdlog::logger& log = *output.log;
  const std::vector<at::Tensor> params = model.trainable_parameters();
  torch::optim::AdamW optimizer(
      params,
      torch::optim::AdamWOptions(s.peak_lr).betas({s.beta1, s.beta2}).weight_decay(s.weight_decay));
  CheckpointState state = checkpoint_state(model, &optimizer);
  state.expert_shards = model.expert_shards;
  state.expert_rank = model.expert_shards > 1 ? comm.rank() : 0;

  std::int64_t step = 0;
  if (std::filesystem::exists(checkpoint)) {
    step = load_checkpoint(checkpoint, state);
    log.info("resumed from {} at step {}/{}", checkpoint.string(), step, s.total_steps);
  }
  // Each rank resumes from its own checkpoint: all must hold the same step (with sharded
  // experts, a rank without one would otherwise start its experts afresh).
  if (comm.world_size() > 1) {
    const at::Tensor steps = comm.all_gather(at::tensor({step}).to(device)).cpu();
    std::string listed;
    for (std::int64_t r = 0; r < steps.size(0); ++r)
      listed += (r ? ", " : "") + std::to_string(steps[r].item<std::int64_t>());
    if (!steps.eq(step).all().item<bool>())
      throw std::runtime_error("the ranks resume from different steps (" + listed +
                               "; rank 0's checkpoint is in the run directory, rank r's in "
                               "rank<r>/): cannot continue " +
                               checkpoint.string());
  }
  metrics.truncate_after(step);
  if (step >= s.total_steps) {
    // Nothing to train (epochs = 0): the checkpoint holds the initial weights for eval/export.
    if (!std::filesystem::exists(checkpoint)) save_checkpoint(checkpoint, state);
    return;
  }

  std::int64_t epoch = step / s.batches_per_epoch;
  loader.start_epoch(epoch);
  for (std::int64_t skip = step % s.batches_per_epoch; skip > 0; --skip) loader.next();

  model.train(true);
  Accumulator acc;
  FiniteWatch finite;
  // Metrics of the steps since the last flush stay readable when the loop throws.
  auto check_finite = [&] {
    try {
      finite.check(model.loss_names);
    } catch (...) {
      try {
        metrics.flush();
      } catch (const std::exception& e) {
        log.error("{}", e.what());
      }
      throw;
    }
  };
  double last_loss = 0;  // the mean loss of the last log interval, for the progress line
  auto interval_start = Clock::now();
  auto last_flush = Clock::now();
  std::int64_t interval_steps = 0;
  double images_per_second = 0;
  double smoothed_rate = 0;  // images/s, exponential moving average of recent steps
  auto step_start = Clock::now();
  const auto run_start = Clock::now();
  const std::int64_t first_step = step;

  while (step < s.total_steps) {
    std::optional<Batch> next = loader.next();
    if (!next) {
      loader.start_epoch(++epoch);
      next = loader.next();
      if (!next)
        throw std::runtime_error(
            "the training set yields no batch (too small for the batch size?)");
    }
    const Batch batch = next->to(device);
    StepResult r;
    try {
      r = train_step(model, optimizer, batch, step, s, comm);
    } catch (...) {
      // Keep what was logged since the last flush; the checkpoint on disk stays as it was.
      try {
        metrics.flush();
      } catch (const std::exception& e) {
        log.error("{}", e.what());
      }
      throw;
    }
    finite.observe(r.loss, r.terms, step);
    for (const auto& [k, v] : r.logged) acc.add(k, v);
    ++step;
    ++interval_steps;

    // A stop request (SIGINT/SIGTERM, workbench/stop.h): checkpoint this step, then stop.
    const bool stop = stop_requested();
    const bool log_point = step % s.log_every == 0 || step == s.total_steps;
    const bool checkpoint_point = step % s.checkpoint_every == 0 || step == s.total_steps || stop;
    if (log_point || checkpoint_point) check_finite();
    if (s.stats_every > 0 && (step % s.stats_every == 0 || step == s.total_steps) &&
        !r.online.empty())
      log_routing_stats(metrics, r.online.front(), step);
    if (log_point) {
      images_per_second = interval_steps * s.images_per_step / seconds_since(interval_start);
      acc.add("train/images_per_s", images_per_second);
      last_loss = acc.write(metrics, step)["train/loss"];
      interval_start = Clock::now();
      interval_steps = 0;
    }
    const double step_rate = s.images_per_step / std::max(1e-9, seconds_since(step_start));
    step_start = Clock::now();
    smoothed_rate = smoothed_rate == 0 ? step_rate : 0.8 * smoothed_rate + 0.2 * step_rate;
    if (output.progress) {
      ProgressInfo info;
      info.epoch = static_cast<double>(step) / s.batches_per_epoch;
      info.step = step;
      info.total_steps = s.total_steps;
      info.loss = last_loss;
      info.images_per_second = smoothed_rate;
      const double rate = (step - first_step) / std::max(1e-9, seconds_since(run_start));
      info.eta_seconds = rate > 0 ? (s.total_steps - step) / rate : 0;
      output.progress(info);
    }
    if (checkpoint_point) {
      state.step = step;  // what a resume (and `workbench eval`) reads back
      // Metrics first: if the process dies between the two, the resume truncates the rows
      // past the older checkpoint and writes them again; the other order would lose rows.
      metrics.flush();
      save_checkpoint(checkpoint, state);
      last_flush = Clock::now();
    } else if (seconds_since(last_flush) > 30) {
      metrics.flush();
      last_flush = Clock::now();
    }
    if (stop)
      throw std::runtime_error("interrupted at step " + std::to_string(step) +
                               "; checkpoint written, rerun to resume");
  }
  log.info("training done: {} steps", s.total_steps);
}

}  // namespace wb
