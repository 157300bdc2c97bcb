// Shared evaluator building blocks (workbench/eval_tools.h): class-balanced draws, batched
// linear heads with a closed-form softmax cross-entropy gradient, the evaluation forward pass.
#include "workbench/eval_tools.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>

#include "data/rng.h"
#include "data/subset.h"
#include "workbench/stop.h"

namespace wb {

namespace {

// Salts keep the draws of different kinds independent under one seed.
constexpr std::uint64_t kSaltFraction = 0xE7A1F, kSaltShots = 0xE5407;
constexpr double kBatchNormEps = 1e-5;  // PyTorch's default

std::vector<std::int64_t> label_vector(const at::Tensor& labels) {
  const at::Tensor l = labels.to(at::kCPU, at::kLong).contiguous();
  return std::vector<std::int64_t>(l.data_ptr<std::int64_t>(),
                                   l.data_ptr<std::int64_t>() + l.numel());
}

template <class Count>
Draw draw_per_class(const at::Tensor& labels, const std::vector<std::int64_t>& pool,
                    std::uint64_t seed, std::uint64_t salt, Count count) {
  const auto l = label_vector(labels);
  std::map<std::int64_t, std::vector<std::int64_t>> groups;
  for (std::int64_t i : pool) {
    if (i < 0 || i >= static_cast<std::int64_t>(l.size()))
      throw std::out_of_range("draw: index " + std::to_string(i) + " outside the labels");
    groups[l[static_cast<std::size_t>(i)]].push_back(i);
  }
  std::mt19937_64 rng(data::combine_seed(seed, salt));
  Draw out;
  for (auto& [label, items] : groups) {
    data::shuffle(items, rng);
    const auto n = std::min<std::int64_t>(count(static_cast<std::int64_t>(items.size())),
                                          static_cast<std::int64_t>(items.size()));
    out.drawn.insert(out.drawn.end(), items.begin(), items.begin() + n);
    out.rest.insert(out.rest.end(), items.begin() + n, items.end());
  }
  std::sort(out.drawn.begin(), out.drawn.end());
  std::sort(out.rest.begin(), out.rest.end());
  return out;
}

std::vector<std::int64_t> iota(std::int64_t n) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = i;
  return v;
}

}  // namespace

Draw draw_fraction(const at::Tensor& labels, const std::vector<std::int64_t>& pool, double fraction,
                   std::uint64_t seed) {
  if (!(fraction > 0.0 && fraction <= 1.0))
    throw std::invalid_argument("fraction must be in (0, 1], got " + std::to_string(fraction));
  return draw_per_class(labels, pool, seed, kSaltFraction, [&](std::int64_t count) {
    const std::int64_t n = std::max<std::int64_t>(1, std::llround(fraction * count));
    return count >= 2 ? std::min(n, count - 1) : n;
  });
}

Draw draw_fraction(const at::Tensor& labels, double fraction, std::uint64_t seed) {
  return draw_fraction(labels, iota(labels.numel()), fraction, seed);
}

Draw draw_shots(const at::Tensor& labels, std::int64_t k, std::uint64_t seed) {
  if (k <= 0) throw std::invalid_argument("shots must be > 0, got " + std::to_string(k));
  return draw_per_class(labels, iota(labels.numel()), seed, kSaltShots,
                        [&](std::int64_t) { return k; });
}

at::Tensor labels_of(const Dataset& data) {
  std::vector<std::int64_t> labels(static_cast<std::size_t>(data.size()));
  for (std::int64_t i = 0; i < data.size(); ++i)
    labels[static_cast<std::size_t>(i)] = data.label(i);
  return at::tensor(labels, at::TensorOptions().dtype(at::kLong));
}

FeatureSet take(const FeatureSet& set, const std::vector<std::int64_t>& indices) {
  const at::Tensor idx = at::tensor(indices, at::TensorOptions().dtype(at::kLong));
  return {set.features.index_select(0, idx.to(set.features.device())),
          set.labels.index_select(0, idx.to(set.labels.device()))};
}

std::shared_ptr<const Dataset> subset(std::shared_ptr<const Dataset> base,
                                      std::vector<std::int64_t> indices, const std::string& what) {
  return data::subset(std::move(base), std::move(indices), what);
}

std::vector<std::int64_t> class_counts(const at::Tensor& labels, std::int64_t classes) {
  std::vector<std::int64_t> counts(static_cast<std::size_t>(std::max<std::int64_t>(0, classes)));
  for (std::int64_t l : label_vector(labels))
    if (l >= 0 && l < classes) ++counts[static_cast<std::size_t>(l)];
  return counts;
}

std::int64_t count_classes(const std::vector<at::Tensor>& labels) {
  std::int64_t classes = 0;
  for (const auto& l : labels)
    if (l.defined() && l.numel() > 0) classes = std::max(classes, l.max().item<std::int64_t>() + 1);
  return classes;
}

// ---- LinearHeads ------------------------------------------------------------------------------

LinearHeads::LinearHeads(std::int64_t dim, std::int64_t classes, LinearHeadOptions options)
    : options_(std::move(options)), dim_(dim), classes_(classes) {
  if (options_.lrs.empty()) throw std::invalid_argument("linear heads: no learning rate given");
  if (dim <= 0 || classes <= 0)
    throw std::invalid_argument("linear heads: need a feature dimension and classes (got " +
                                std::to_string(dim) + ", " + std::to_string(classes) + ")");
  const auto H = heads();
  at::Generator generator = at::detail::createCPUGenerator(options_.seed);
  const auto cpu = at::TensorOptions().dtype(at::kFloat);
  weight_ = at::empty({H, dim, classes}, cpu).normal_(0.0, 0.01, generator).to(options_.device);
  const auto on_device = cpu.device(options_.device);
  bias_ = at::zeros({H, classes}, on_device);
  weight_velocity_ = at::zeros_like(weight_);
  bias_velocity_ = at::zeros_like(bias_);
  lr_ = at::tensor(options_.lrs, at::TensorOptions().dtype(at::kDouble)).to(on_device);
  running_mean_ = at::zeros({dim}, on_device);
  running_var_ = at::ones({dim}, on_device);
}

void LinearHeads::set_schedule(std::int64_t total_steps) {
  total_steps_ = std::max<std::int64_t>(1, total_steps);
  step_ = 0;
}

at::Tensor LinearHeads::batch_normalise(const at::Tensor& x) {
  if (!options_.batch_norm || x.size(0) < 2) return normalise(x);
  const at::Tensor mean = x.mean(0);
  const at::Tensor var = x.var(0, /*unbiased=*/false);
  const double m = options_.bn_momentum;
  const double n = static_cast<double>(x.size(0));
  running_mean_.mul_(1 - m).add_(mean, m);
  running_var_.mul_(1 - m).add_(var * (n / (n - 1)), m);  // PyTorch keeps the unbiased one
  return (x - mean) / (var + kBatchNormEps).sqrt();
}

at::Tensor LinearHeads::normalise(const at::Tensor& x) const {
  if (!options_.batch_norm) return x;
  return (x - running_mean_) / (running_var_ + kBatchNormEps).sqrt();
}

std::vector<double> LinearHeads::step(const at::Tensor& features, const at::Tensor& labels) {
  at::NoGradGuard no_grad;
  const at::Tensor x = batch_normalise(features.detach().to(options_.device, at::kFloat));
  const at::Tensor y = labels.to(options_.device, at::kLong);
  const auto B = x.size(0), H = heads();
  // [B, D] @ [H, D, C] broadcasts to [H, B, C]: every head in one matmul.
  const at::Tensor logits = at::matmul(x, weight_) + bias_.unsqueeze(1);
  const at::Tensor logp = at::log_softmax(logits, 2);
  const at::Tensor onehot = at::one_hot(y, classes_).to(at::kFloat);
  const at::Tensor loss = -(logp * onehot).sum(2).mean(1);
  // d(mean CE)/d logits = (softmax - onehot) / B.
  const at::Tensor g = (logp.exp() - onehot) / static_cast<double>(B);
  at::Tensor grad_w = at::matmul(x.t(), g);  // [D, B] @ [H, B, C] -> [H, D, C]
  at::Tensor grad_b = g.sum(1);
  if (options_.weight_decay > 0) {
    grad_w = grad_w + options_.weight_decay * weight_;
    grad_b = grad_b + options_.weight_decay * bias_;
  }
  weight_velocity_.mul_(options_.momentum).add_(grad_w);
  bias_velocity_.mul_(options_.momentum).add_(grad_b);
  const double pi = std::acos(-1.0);
  const double factor =
      0.5 * (1.0 + std::cos(pi * static_cast<double>(std::min(step_, total_steps_)) /
                            static_cast<double>(total_steps_)));
  const at::Tensor lr = (lr_ * factor).to(at::kFloat);
  weight_.sub_(lr.view({H, 1, 1}) * weight_velocity_);
  bias_.sub_(lr.view({H, 1}) * bias_velocity_);
  ++step_;
  const at::Tensor l = loss.to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(l.data_ptr<double>(), l.data_ptr<double>() + H);
}

void LinearHeads::keep_only(std::int64_t head) {
  if (head < 0 || head >= heads())
    throw std::out_of_range("linear heads: no head " + std::to_string(head));
  auto one = [&](const at::Tensor& t) { return t.narrow(0, head, 1).clone(); };
  weight_ = one(weight_);
  bias_ = one(bias_);
  weight_velocity_ = one(weight_velocity_);
  bias_velocity_ = one(bias_velocity_);
  lr_ = one(lr_);
  options_.lrs = {options_.lrs[static_cast<std::size_t>(head)]};
}

at::Tensor LinearHeads::logits(const at::Tensor& features) const {
  at::NoGradGuard no_grad;
  const at::Tensor x = normalise(features.detach().to(options_.device, at::kFloat));
  return at::matmul(x, weight_) + bias_.unsqueeze(1);
}

std::vector<double> LinearHeads::accuracy(const FeatureSet& data, std::int64_t topk) const {
  const auto n = data.features.size(0), H = heads();
  if (n == 0) throw std::invalid_argument("accuracy of linear heads on an empty set");
  constexpr std::int64_t chunk = 4096;
  std::vector<std::int64_t> correct(static_cast<std::size_t>(H), 0);
  for (std::int64_t s = 0; s < n; s += chunk) {
    const auto len = std::min(chunk, n - s);
    const at::Tensor l = logits(data.features.narrow(0, s, len));
    const at::Tensor y = data.labels.narrow(0, s, len).to(l.device());
    for (std::int64_t h = 0; h < H; ++h) correct[h] += topk_correct(l[h], y, topk);
  }
  std::vector<double> out;
  for (auto c : correct) out.push_back(100.0 * static_cast<double>(c) / static_cast<double>(n));
  return out;
}

void train_heads(LinearHeads& heads, const FeatureSet& train, std::int64_t epochs,
                 std::int64_t batch, std::uint64_t seed) {
  const auto n = train.features.size(0);
  if (n < 2) throw std::invalid_argument("linear heads need at least two training items");
  if (epochs <= 0 || batch <= 0) throw std::invalid_argument("epochs and batch must be > 0");
  const std::int64_t per_epoch = n / batch + (n % batch >= 2 ? 1 : 0);
  heads.set_schedule(epochs * per_epoch);
  at::Generator generator = at::detail::createCPUGenerator(seed);
  for (std::int64_t e = 0; e < epochs; ++e) {
    throw_if_stop_requested("training linear heads");  // no Loader here checks it
    const at::Tensor order = at::randperm(n, generator, at::TensorOptions().dtype(at::kLong));
    for (std::int64_t s = 0; s + 2 <= n; s += batch) {
      const at::Tensor idx = order.narrow(0, s, std::min(batch, n - s));
      heads.step(train.features.index_select(0, idx), train.labels.index_select(0, idx));
    }
  }
}

std::int64_t best_head(const std::vector<double>& validation_accuracy) {
  if (validation_accuracy.empty()) throw std::invalid_argument("best_head: no heads");
  return std::max_element(validation_accuracy.begin(), validation_accuracy.end()) -
         validation_accuracy.begin();
}

// ---- forward and small statistics -------------------------------------------------------------

BackboneOutput eval_forward(Backbone& backbone, const Batch& batch, std::int64_t view, bool grad) {
  std::optional<at::NoGradGuard> no_grad;
  if (!grad) no_grad.emplace();
  backbone.eval();
  RoutingContext rc;
  rc.training = false;
  const at::Tensor& images = batch.views.at(static_cast<std::size_t>(view));
  rc.view = at::full({images.size(0)}, view,
                     at::TensorOptions().dtype(at::kLong).device(images.device()));
  rc.cluster = batch.cluster;
  return backbone.forward(images, rc);
}

FinetuneModel::FinetuneModel(TrainableCopy copy, std::int64_t classes, bool use_head,
                             c10::Device device)
    : model(std::move(copy)) {
  if (use_head)
    for (auto& loss : model.losses)
      if (loss->finetune_dim() > 0) {
        head = loss.get();
        break;
      }
  const std::int64_t dim = head ? head->finetune_dim() : model.backbone->feature_dim();
  classifier = torch::nn::Linear(dim, classes);
  {
    at::NoGradGuard no_grad;
    classifier->weight.zero_();
    classifier->bias.zero_();
  }
  classifier->to(device);
}

at::Tensor FinetuneModel::logits(const at::Tensor& cls) {
  return classifier->forward(head ? head->finetune_forward(cls) : cls);
}

void FinetuneModel::train(bool on) {
  model.backbone->train(on);
  if (head) head->train(on);
  classifier->train(on);
}

std::vector<at::Tensor> FinetuneModel::parameters() {
  std::vector<at::Tensor> params;
  for (const auto& p : model.backbone->parameters())
    if (p.requires_grad()) params.push_back(p);
  if (head)
    for (const auto& p : head->finetune_parameters()) params.push_back(p);
  for (const auto& p : classifier->parameters()) params.push_back(p);
  return params;
}

void finetune(FinetuneModel& model, std::shared_ptr<const Dataset> train,
              const FinetuneOptions& options, c10::Device device) {
  const std::vector<at::Tensor> params = model.parameters();
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  if (options.sgd)
    optimizer =
        std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(options.lr)
                                                        .momentum(options.momentum)
                                                        .weight_decay(options.weight_decay));
  else
    optimizer = std::make_unique<torch::optim::AdamW>(
        params, torch::optim::AdamWOptions(options.lr).weight_decay(options.weight_decay));
  LoaderOptions loader_options = options.loader;
  loader_options.shuffle = true;
  loader_options.drop_last = train->size() >= loader_options.batch_size;
  Loader loader(std::move(train), {options.recipe}, loader_options);
  const std::int64_t steps =
      options.epochs > 0 ? options.epochs * loader.batches_per_epoch() : options.steps;
  const double pi = std::acos(-1.0);
  const auto total = static_cast<double>(std::max<std::int64_t>(1, steps));
  std::int64_t step = 0, epoch = 0;
  model.train(true);
  while (step < steps) {
    loader.start_epoch(epoch++);
    bool any = false;
    while (step < steps) {
      auto batch = loader.next();
      if (!batch) break;
      if (batch->size() < 2) continue;  // batch norm in a projection head needs two
      any = true;
      const Batch b = batch->to(device);
      RoutingContext rc;
      rc.training = options.route_as_training;
      rc.view =
          at::full({b.size()}, options.view, at::TensorOptions().dtype(at::kLong).device(device));
      rc.cluster = b.cluster;
      const at::Tensor logits = model.logits(model.model.backbone->forward(b.views[0], rc).cls);
      const at::Tensor loss = at::nll_loss(at::log_softmax(logits, 1), b.labels);
      for (auto& group : optimizer->param_groups())
        group.options().set_lr(options.lr * 0.5 *
                               (1 + std::cos(pi * static_cast<double>(step) / total)));
      optimizer->zero_grad();
      loss.backward();
      optimizer->step();
      ++step;
    }
    if (!any)
      throw std::runtime_error("fine-tuning: the training set yields no batch of two images");
  }
  model.train(false);
}

std::pair<double, double> finetuned_accuracy(EvalContext& context, FinetuneModel& model,
                                             std::shared_ptr<const Dataset> data,
                                             std::int64_t view) {
  LoaderOptions options = context.loader_options();
  options.shuffle = false;
  options.drop_last = false;
  Loader loader(std::move(data), {context.recipe("eval")}, options);
  loader.start_epoch(0);
  at::NoGradGuard no_grad;
  model.train(false);
  std::int64_t n = 0, top1 = 0, top5 = 0;
  while (auto batch = loader.next()) {
    const Batch b = batch->to(context.device());
    const at::Tensor logits = model.logits(eval_forward_as(*model.model.backbone, b, view).cls);
    top1 += topk_correct(logits, b.labels, 1);
    top5 += topk_correct(logits, b.labels, 5);
    n += b.size();
  }
  if (n == 0) throw std::runtime_error("fine-tuning: nothing to evaluate on");
  return {100.0 * static_cast<double>(top1) / static_cast<double>(n),
          100.0 * static_cast<double>(top5) / static_cast<double>(n)};
}

BackboneOutput eval_forward_as(Backbone& backbone, const Batch& batch, std::int64_t view,
                               bool grad) {
  std::optional<at::NoGradGuard> no_grad;
  if (!grad) no_grad.emplace();
  backbone.eval();
  RoutingContext rc;
  rc.training = false;
  const at::Tensor& images = batch.views.at(0);
  rc.view = at::full({images.size(0)}, view,
                     at::TensorOptions().dtype(at::kLong).device(images.device()));
  rc.cluster = batch.cluster;
  return backbone.forward(images, rc);
}

std::int64_t topk_correct(const at::Tensor& logits, const at::Tensor& labels, std::int64_t k) {
  k = std::min<std::int64_t>(k, logits.size(1));
  if (k <= 0 || logits.size(0) == 0) return 0;
  const at::Tensor top = std::get<1>(logits.topk(k, 1));
  return top.eq(labels.to(top.device()).unsqueeze(1)).any(1).sum().item<std::int64_t>();
}

std::vector<std::int64_t> spread_items(std::int64_t size, std::int64_t count) {
  std::vector<std::int64_t> items;
  for (std::int64_t i = 0; i < count; ++i) items.push_back(i * size / count);
  return items;
}

}  // namespace wb
