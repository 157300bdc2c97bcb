// Fixtures of the evaluator tests: a fake EvalContext serving hand-made features and data
// sets (and recording what was asked for, in order), backbones whose routings are scripted,
// a small trainable backbone and loss for fine-tuning, and loading of the evaluator plugins.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "plugin/loader.h"
#include "test_data_helpers.h"
#include "workbench/evaluator.h"
#include "workbench/registry.h"

namespace wbtest {

// The registry with one evaluator plugin of the build loaded.
inline std::unique_ptr<wb::Registry> evaluator_registry(const std::string& plugin) {
  auto registry = std::make_unique<wb::Registry>();
  wb::PluginLoader loader(*registry);
  const std::string file = std::string(WB_BUILD_DIR) + "/plugins/workbench_" + plugin + ".so";
  REQUIRE_MESSAGE(loader.load_file(file), file);
  return registry;
}

// Runs evaluator `plugin` with its defaults overridden by `set`.
inline wb::EvalResult run_evaluator(const std::string& plugin, wb::EvalContext& ctx,
                                    const std::map<std::string, wb::Value>& set = {}) {
  auto registry = evaluator_registry(plugin);
  wb::Params params = registry->defaults(wb::Kind::Evaluator, plugin);
  for (const auto& [k, v] : set) {
    REQUIRE_MESSAGE(params.has(k), "no parameter " << k);
    params.set(k, v);
  }
  return registry->make_evaluator(plugin, params)->evaluate(ctx);
}

inline std::vector<double> values(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// Gaussian clusters: class c around centre c (one coordinate = `separation`), unit noise.
inline wb::FeatureSet clusters(const std::vector<std::int64_t>& counts, std::int64_t dim,
                               double separation, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.f, 1.f);
  std::vector<float> x;
  std::vector<std::int64_t> y;
  for (const std::int64_t c : labels_with_counts(counts)) {
    for (std::int64_t d = 0; d < dim; ++d)
      x.push_back(noise(rng) + (d == c % dim ? static_cast<float>(separation) : 0.f));
    y.push_back(c);
  }
  const auto n = static_cast<std::int64_t>(y.size());
  return {at::tensor(x).view({n, dim}), at::tensor(y, at::TensorOptions().dtype(at::kLong))};
}

// Class-coded grey images: class c has brightness 40 + 90 c, plus per-pixel noise.
class ClassImages : public wb::Dataset {
 public:
  ClassImages(std::vector<std::int64_t> labels, std::int64_t side, std::uint64_t seed)
      : labels_(std::move(labels)), side_(side), seed_(seed) {
    for (auto l : labels_) classes_ = std::max(classes_, l + 1);
  }
  std::int64_t size() const override { return static_cast<std::int64_t>(labels_.size()); }
  std::int64_t classes() const override { return classes_; }
  std::int64_t channels() const override { return 1; }
  std::int64_t image_size() const override { return side_; }
  wb::Image image(std::int64_t i) const override {
    std::mt19937_64 rng(seed_ * 1000003 + static_cast<std::uint64_t>(i));
    std::uniform_int_distribution<int> noise(-20, 20);
    wb::Image img{1, side_, side_, std::vector<std::uint8_t>(side_ * side_)};
    for (auto& p : img.pixels)
      p = static_cast<std::uint8_t>(40 + 90 * labels_[static_cast<std::size_t>(i)] + noise(rng));
    return img;
  }
  std::int64_t label(std::int64_t i) const override { return labels_.at(i); }
  std::string describe() const override { return "class images"; }

 private:
  std::vector<std::int64_t> labels_;
  std::int64_t side_, classes_ = 0;
  std::uint64_t seed_;
};

// Serves what a test put in; records every features()/dataset() call and info line in order.
class FakeContext : public wb::EvalContext {
 public:
  using Key = std::pair<std::string, int>;
  std::shared_ptr<wb::Backbone> model;
  std::vector<std::shared_ptr<wb::Loss>> loss_list;
  std::map<Key, wb::FeatureSet> feature_sets;
  std::map<Key, std::shared_ptr<const wb::Dataset>> datasets;
  std::function<wb::TrainableCopy()> copy;
  std::vector<std::string> events;
  std::int64_t image_size = 8, batch = 16;
  std::uint64_t run_seed = 0;
  TempDir dir;

  static Key key(const std::string& name, wb::Split split) {
    return {name, static_cast<int>(split)};
  }
  void set_features(wb::Split split, wb::FeatureSet f, const std::string& name = "") {
    feature_sets[key(name, split)] = std::move(f);
  }

  wb::Backbone& backbone() override {
    REQUIRE(model);
    return *model;
  }
  std::vector<wb::Loss*> losses() override {
    std::vector<wb::Loss*> out;
    for (auto& l : loss_list) out.push_back(l.get());
    return out;
  }
  c10::Device device() const override { return c10::Device(c10::kCPU); }
  std::uint64_t seed() const override { return run_seed; }
  int threads() const override { return 1; }
  std::shared_ptr<const wb::Dataset> dataset(const std::string& name, wb::Split split) override {
    events.push_back(std::string("dataset ") + name + " " + wb::split_name(split));
    auto it = datasets.find(key(name, split));
    if (it == datasets.end())
      throw std::runtime_error("fake context: no data set " + name + " " + wb::split_name(split));
    return it->second;
  }
  wb::ViewRecipe recipe(const std::string& preset) override {
    wb::ViewRecipe r = wb::view_preset(preset);
    r.size = image_size;
    return r;
  }
  wb::LoaderOptions loader_options() const override {
    wb::LoaderOptions o;
    o.batch_size = batch;
    o.workers = 1;
    o.seed = run_seed;
    return o;
  }
  wb::FeatureSet features(const std::string& name, wb::Split split,
                          std::int64_t view = 0) override {
    events.push_back(std::string("features ") + name + " " + wb::split_name(split) +
                     (view ? " view " + std::to_string(view) : ""));
    auto it = feature_sets.find(key(name, split));
    if (it == feature_sets.end())
      throw std::runtime_error("fake context: no features " + name + " " + wb::split_name(split));
    return it->second;
  }
  wb::TrainableCopy trainable_copy() override {
    REQUIRE(copy);
    return copy();
  }
  std::filesystem::path output_dir() const override { return dir.path(); }
  void info(const std::string& message) override { events.push_back("info " + message); }

  // Position of the first event starting with `prefix` (events.size() when none).
  std::size_t first(const std::string& prefix) const {
    for (std::size_t i = 0; i < events.size(); ++i)
      if (events[i].rfind(prefix, 0) == 0) return i;
    return events.size();
  }
};

// A backbone whose routings are given: table[view][layer] holds the chosen experts
// [images * (1 + N), k] of the whole data set in item order (loaders in these tests do not
// shuffle), and gate_table[view][layer] their gate weights (1 / k when not given).
class ScriptedBackbone : public wb::Backbone {
 public:
  ScriptedBackbone(std::int64_t grid, std::int64_t experts) : grid_(grid), experts_(experts) {}
  std::vector<std::vector<at::Tensor>> table, gate_table;  // [view][layer]
  std::vector<std::int64_t> seen = {0, 0};                 // images forwarded so far, per view
  std::vector<at::Tensor> inputs;                          // every batch of images, in order

  wb::BackboneOutput forward(const at::Tensor& images, const wb::RoutingContext& rc) override {
    CHECK_FALSE(rc.training);
    inputs.push_back(images.clone());
    const auto B = images.size(0), P = 1 + grid_ * grid_;
    const auto view = rc.view.defined() ? rc.view[0].item<std::int64_t>() : 0;
    wb::BackboneOutput out;
    out.cls = at::zeros({B, 2});
    out.patches = at::zeros({B, P - 1, 2});
    const auto start = seen[static_cast<std::size_t>(view)] * P;
    for (std::size_t l = 0; l < table[static_cast<std::size_t>(view)].size(); ++l) {
      wb::Routing r;
      r.experts = table[view][l].narrow(0, start, B * P);
      const auto k = r.experts.size(1);
      r.weights = gate_table.empty() ? at::full({B * P, k}, 1.0 / static_cast<double>(k))
                                     : gate_table[view][l].narrow(0, start, B * P);
      r.kept = at::ones({B * P, k}, at::TensorOptions().dtype(at::kBool));
      r.gates = at::zeros({B * P, experts_}).scatter_(1, r.experts, r.weights);
      r.probs = r.gates;
      r.tokens_per_image = P;
      out.routings.push_back(r);
    }
    seen[static_cast<std::size_t>(view)] += B;
    return out;
  }
  std::int64_t feature_dim() const override { return 2; }
  std::int64_t patch_grid() const override { return grid_; }
  std::vector<std::int64_t> moe_blocks() const override { return {0}; }
  std::int64_t experts() const override { return experts_; }
  wb::ModelCost cost() const override { return {}; }
  void freeze_patch_embedding() override {}

 private:
  std::int64_t grid_, experts_;
};

// A trainable backbone: CLS = linear map of the flattened image; no MoE layer.
class LinearBackbone : public wb::Backbone {
 public:
  LinearBackbone(std::int64_t pixels, std::int64_t dim) : dim_(dim) {
    proj = register_module("proj", torch::nn::Linear(pixels, dim));
  }
  wb::BackboneOutput forward(const at::Tensor& images, const wb::RoutingContext& rc) override {
    seen.push_back(
        {rc.training, rc.view.defined() ? rc.view[0].item<std::int64_t>() : -1, is_training()});
    wb::BackboneOutput out;
    out.cls = proj->forward(images.flatten(1));
    out.patches = out.cls.unsqueeze(1);
    return out;
  }
  std::int64_t feature_dim() const override { return dim_; }
  std::int64_t patch_grid() const override { return 1; }
  std::vector<std::int64_t> moe_blocks() const override { return {}; }
  std::int64_t experts() const override { return 0; }
  wb::ModelCost cost() const override { return {}; }
  void freeze_patch_embedding() override {}
  torch::nn::Linear proj{nullptr};
  // Every forward pass: RoutingContext::training, the view its first image claims, and whether
  // the module was in training mode.
  struct Seen {
    bool routing_training;
    std::int64_t view;
    bool module_training;
  };
  std::vector<Seen> seen;

 private:
  std::int64_t dim_;
};

// A loss whose "projection head" (Linear + ReLU) is offered for fine-tuning; counts its uses.
class HeadLoss : public wb::Loss {
 public:
  explicit HeadLoss(std::int64_t dim) { fc = register_module("fc", torch::nn::Linear(dim, 6)); }
  wb::LossRequirements requirements() const override { return {}; }
  wb::LossResult compute(const wb::StepState&) override { return {}; }
  std::int64_t finetune_dim() const override { return 6; }
  at::Tensor finetune_forward(const at::Tensor& cls) override {
    ++calls;
    return at::relu(fc->forward(cls));
  }
  std::vector<at::Tensor> finetune_parameters() override { return fc->parameters(); }
  torch::nn::Linear fc{nullptr};
  int calls = 0;
};

}  // namespace wbtest
