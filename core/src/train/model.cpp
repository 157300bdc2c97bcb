#include "train/model.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <stdexcept>
#include <string>

#include "cluster/cluster_file.h"
#include "workbench/gate.h"
#include "workbench/matcher.h"
#include "workbench/moe_layer.h"
#include "workbench/registry.h"

namespace wb {

namespace {

std::shared_ptr<Backbone> make_backbone(const RunConfig& config, const Registry& registry,
                                        const DataShape& data, const at::Tensor& centroids) {
  BackboneContext context;
  context.channels = data.channels;
  context.image_size = data.image_size;
  context.make_gate = [&config, &registry,
                       centroids](const GateShape& requested) -> std::shared_ptr<Gate> {
    if (config.gate.plugin.empty())
      throw std::runtime_error("backbone '" + config.backbone.plugin +
                               "' has MoE layers but the configuration has no [gate] table "
                               "(add e.g. gate = { plugin = \"noisy_topk\" })");
    GateShape shape = requested;
    shape.centroids = centroids;
    return registry.make_gate(config.gate.plugin, config.gate.params, shape);
  };
  return registry.make_backbone(config.backbone.plugin, config.backbone.params, context);
}

}  // namespace

std::vector<at::Tensor> Model::trainable_parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& p : backbone->parameters())
    if (p.requires_grad()) out.push_back(p);
  for (const auto& loss : losses)
    for (const auto& p : loss->parameters())
      if (p.requires_grad()) out.push_back(p);
  return out;
}

void Model::train(bool on) {
  backbone->train(on);
  // The momentum encoder runs in training mode like the online one (MoCo v3 reference).
  if (momentum) momentum->train(on);
  for (auto& loss : losses) loss->train(on);
}

void Model::to(c10::Device device) {
  backbone->to(device);
  if (momentum) momentum->to(device);
  for (auto& loss : losses) loss->to(device);
}

namespace {

std::vector<std::shared_ptr<MoeLayer>> moe_layers(torch::nn::Module& module) {
  std::vector<std::shared_ptr<MoeLayer>> out;
  for (const auto& m : module.modules())
    if (auto layer = std::dynamic_pointer_cast<MoeLayer>(m)) out.push_back(layer);
  return out;
}

}  // namespace

void shard_experts(Model& model, Communicator& comm) {
  for (auto& layer : moe_layers(*model.backbone)) {
    layer->shard_experts(comm);
    for (const at::Tensor* p : {&layer->w1_, &layer->b1_, &layer->w2_, &layer->b2_})
      model.sharded.push_back(*p);
  }
  if (model.sharded.empty())
    throw std::runtime_error(
        "train.expert_parallel: the backbone has no MoE layer whose experts could be sharded");
  if (model.momentum)
    for (auto& layer : moe_layers(*model.momentum)) layer->shard_experts(comm);
  model.expert_shards = comm.world_size();
}

void gather_experts(Model& model) {
  if (model.expert_shards == 1) return;
  for (auto& layer : moe_layers(*model.backbone)) layer->gather_experts();
  if (model.momentum)
    for (auto& layer : moe_layers(*model.momentum)) layer->gather_experts();
  model.sharded.clear();
  model.expert_shards = 1;
}

void Model::momentum_update(double m) {
  if (!momentum) return;
  at::NoGradGuard no_grad;
  auto online = backbone->named_parameters();
  for (auto& item : momentum->named_parameters()) {
    const at::Tensor* source = online.find(item.key());
    if (!source) throw std::logic_error("momentum encoder has no twin for " + item.key());
    item.value().mul_(m).add_(*source, 1.0 - m);
  }
  auto online_buffers = backbone->named_buffers();
  for (auto& item : momentum->named_buffers())
    if (const at::Tensor* source = online_buffers.find(item.key())) item.value().copy_(*source);
}

void copy_weights(const torch::nn::Module& from, torch::nn::Module& to) {
  at::NoGradGuard no_grad;
  auto params = from.named_parameters();
  for (auto& item : to.named_parameters()) {
    const at::Tensor* source = params.find(item.key());
    if (!source) throw std::logic_error("copy_weights: no parameter " + item.key());
    item.value().copy_(*source);
  }
  auto buffers = from.named_buffers();
  for (auto& item : to.named_buffers())
    if (const at::Tensor* source = buffers.find(item.key())) item.value().copy_(*source);
}

Model build_model(const RunConfig& config, const Registry& registry, const DataShape& data,
                  Communicator* comm) {
  Model model;
  model.comm = comm;
  // MoCE: the gates get the clustering's centroids (the file's identity is checked where the
  // training set is opened, train/train_point.cpp).
  at::Tensor centroids;
  if (!config.settings.data.clusters.empty()) {
    try {
      centroids = read_cluster_file(cluster_file_path(config.settings.data.clusters)).centroids;
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("data.clusters: ") + e.what());
    }
  }
  model.backbone = make_backbone(config, registry, data, centroids);

  LossContext context;
  context.feature_dim = model.backbone->feature_dim();
  context.classes = data.classes;
  context.patch_grid = model.backbone->patch_grid();
  context.channels = data.channels;
  context.image_size = data.image_size;
  context.moe_layers = static_cast<std::int64_t>(model.backbone->moe_blocks().size());
  context.experts = model.backbone->experts();
  context.temperature = config.settings.train.temperature;
  context.make_matcher = [&registry](const PluginRef& ref) {
    return registry.make_matcher(ref.name, ref.params);
  };
  context.comm = comm;
  if (config.losses.empty())
    throw std::runtime_error("the configuration has no losses (add losses = [ { plugin = ... } ])");
  for (const auto& l : config.losses) {
    model.losses.push_back(registry.make_loss(l.plugin, l.params, context));
    model.loss_names.push_back(l.plugin);
    model.needs = merge_requirements(model.needs, model.losses.back()->requirements());
  }

  if (model.needs.freeze_patch_embedding) model.backbone->freeze_patch_embedding();
  if (model.needs.momentum_encoder) {
    model.momentum = make_backbone(config, registry, data, centroids);
    copy_weights(*model.backbone, *model.momentum);
    for (auto& p : model.momentum->parameters()) p.set_requires_grad(false);
  }
  return model;
}

c10::Device pick_device(const std::string& wanted) {
  const bool cuda = at::hasCUDA();
  if (wanted == "cuda" && !cuda)
    throw std::runtime_error("device = \"cuda\" but this LibTorch has no usable CUDA device");
  if (wanted == "cuda" || (wanted == "auto" && cuda)) return c10::Device(c10::kCUDA);
  return c10::Device(c10::kCPU);
}

}  // namespace wb
