#include "eval/context.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>
#include <torch/serialize.h>

#include <stdexcept>

#include "cluster/assign.h"
#include "train/data_access.h"

namespace wb {

namespace fs = std::filesystem;

RunEvalContext::RunEvalContext(const RunConfig& config, const Registry& registry, Model& model,
                               c10::Device device, int threads, fs::path output_dir,
                               spdlog::logger& log, std::string cache_tag)
    : config_(config),
      registry_(registry),
      model_(model),
      device_(device),
      threads_(threads),
      output_dir_(std::move(output_dir)),
      log_(log),
      cache_tag_(std::move(cache_tag)) {
  fs::create_directories(output_dir_);
}

std::vector<Loss*> RunEvalContext::losses() {
  std::vector<Loss*> out;
  for (auto& l : model_.losses) out.push_back(l.get());
  return out;
}

std::uint64_t RunEvalContext::seed() const {
  return config_.settings.run.seed;
}

const DataSettings& RunEvalContext::data_settings(const std::string& name) const {
  if (name.empty()) return config_.settings.data;
  auto it = config_.settings.datasets.find(name);
  if (it != config_.settings.datasets.end()) return it->second;
  std::string known;
  for (const auto& [n, p] : config_.settings.datasets) known += (known.empty() ? "" : ", ") + n;
  throw std::runtime_error("no data set named '" + name +
                           "' in [datasets] (defined: " + (known.empty() ? "none" : known) + ")");
}

RunEvalContext::~RunEvalContext() = default;

std::shared_ptr<const Dataset> RunEvalContext::opened(const std::string& name, Split split) {
  auto key = std::make_pair(name, static_cast<int>(split));
  auto it = opened_.find(key);
  if (it != opened_.end()) return it->second;
  auto data = open_data(data_settings(name), split);
  opened_[key] = data;
  return data;
}

std::shared_ptr<const Dataset> RunEvalContext::dataset(const std::string& name, Split split) {
  auto key = std::make_pair(name, static_cast<int>(split));
  auto it = datasets_.find(key);
  if (it != datasets_.end()) return it->second;
  auto data = opened(name, split);
  // A cluster-gated model routes every image by its cluster: assigned once per data set.
  if (const std::string& setting = config_.settings.data.clusters; !setting.empty()) {
    if (!clusters_) clusters_ = std::make_unique<EvalClusters>(setting, registry_, log_);
    data = clusters_->assign(std::move(data), data_settings(name));
  }
  datasets_[key] = data;
  return data;
}

ViewRecipe RunEvalContext::recipe(const std::string& preset) {
  // Every data set is fed at the size the backbone was built for.
  const std::int64_t size = opened("", Split::Train)->image_size();
  return make_recipe(preset, Params(), size);
}

LoaderOptions RunEvalContext::loader_options() const {
  LoaderOptions o;
  o.batch_size = config_.settings.train.batch;
  o.workers = config_.settings.run.workers;
  o.seed = seed();
  o.pin_memory = device_.is_cuda();
  return o;
}

FeatureSet RunEvalContext::features(const std::string& name, Split split, std::int64_t view) {
  if (view < 0) throw std::invalid_argument("features: view " + std::to_string(view) + " < 0");
  auto key = std::make_tuple(name, static_cast<int>(split), view);
  auto it = features_.find(key);
  if (it != features_.end()) return it->second;
  const std::string view_tag = view == 0 ? "" : "_view" + std::to_string(view);
  const fs::path file = output_dir_ / ("features_" + (name.empty() ? "train_data" : name) + "_" +
                                       split_name(split) + view_tag + "_" + cache_tag_ + ".pt");
  FeatureSet f;
  std::error_code ec;
  if (fs::exists(file, ec)) {
    std::vector<at::Tensor> saved;
    torch::load(saved, file.string());
    f.features = saved.at(0);
    f.labels = saved.at(1);
  } else {
    LoaderOptions o = loader_options();
    o.shuffle = false;
    o.drop_last = false;
    f = extract_features(backbone(), dataset(name, split), recipe("eval"), o, device_, view);
    const fs::path tmp = file.string() + ".tmp";
    torch::save(std::vector<at::Tensor>{f.features, f.labels}, tmp.string());
    fs::rename(tmp, file);
  }
  features_[key] = f;
  return f;
}

TrainableCopy RunEvalContext::trainable_copy() {
  auto train = opened("", Split::Train);
  DataShape shape{train->channels(), train->image_size(), train->classes()};
  Model copy = build_model(config_, registry_, shape, model_.comm);
  copy_weights(*model_.backbone, *copy.backbone);
  for (std::size_t i = 0; i < copy.losses.size(); ++i)
    copy_weights(*model_.losses[i], *copy.losses[i]);
  copy.to(device_);
  copy.train(true);
  return {copy.backbone, copy.losses};
}

void RunEvalContext::info(const std::string& message) {
  log_.info("{}", message);
}

FeatureSet extract_features(Backbone& backbone, std::shared_ptr<const Dataset> data,
                            const ViewRecipe& recipe, const LoaderOptions& options,
                            c10::Device device, std::int64_t view) {
  Loader loader(std::move(data), {recipe}, options);
  loader.start_epoch(0);
  at::NoGradGuard no_grad;
  backbone.eval();
  std::vector<at::Tensor> features, labels;
  while (auto batch = loader.next()) {
    Batch b = batch->to(device);
    RoutingContext rc;
    rc.training = false;
    rc.view = at::full({b.size()}, view, at::TensorOptions().dtype(at::kLong).device(device));
    rc.cluster = b.cluster;
    features.push_back(backbone.forward(b.views[0], rc).cls.to(at::kCPU));
    labels.push_back(batch->labels);
  }
  if (features.empty()) throw std::runtime_error("no images to extract features from");
  return {at::cat(features), at::cat(labels)};
}

}  // namespace wb
