#include "cluster/assign.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <stdexcept>
#include <utility>

#include "config/run_config.h"
#include "data/subset.h"
#include "eval/context.h"
#include "train/data_access.h"
#include "workbench/layers.h"

namespace wb {

namespace fs = std::filesystem;

namespace {

// A data set with a cluster id per item; everything else is the base's.
class ClusteredDataset final : public data::NamedDataset {
 public:
  ClusteredDataset(std::shared_ptr<const Dataset> base, std::vector<std::int64_t> clusters)
      : base_(std::move(base)), clusters_(std::move(clusters)) {}

  std::int64_t size() const override { return base_->size(); }
  std::int64_t classes() const override { return base_->classes(); }
  std::int64_t channels() const override { return base_->channels(); }
  std::int64_t image_size() const override { return base_->image_size(); }
  Image image(std::int64_t i) const override { return base_->image(i); }
  std::int64_t label(std::int64_t i) const override { return base_->label(i); }
  std::string name() const override { return data::name_of(*base_); }
  std::string describe() const override { return base_->describe(); }
  std::vector<std::string> class_names() const override {
    if (auto* named = dynamic_cast<const data::NamedDataset*>(base_.get()))
      return named->class_names();
    return NamedDataset::class_names();
  }
  std::vector<double> pixel_mean() const override { return base_->pixel_mean(); }
  std::vector<double> pixel_std() const override { return base_->pixel_std(); }
  bool has_clusters() const override { return true; }
  std::int64_t cluster(std::int64_t i) const override {
    return clusters_.at(static_cast<std::size_t>(i));
  }

 private:
  std::shared_ptr<const Dataset> base_;
  std::vector<std::int64_t> clusters_;
};

std::vector<std::int64_t> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kLong).contiguous();
  return std::vector<std::int64_t>(c.data_ptr<std::int64_t>(),
                                   c.data_ptr<std::int64_t>() + c.numel());
}

}  // namespace

TrainedRun open_cluster_source(const ClusterFile& clusters, const fs::path& file,
                               const Registry& registry) {
  try {
    return open_trained_run(locate_referenced_run(clusters.source_run, file.parent_path()),
                            registry);
  } catch (const std::exception& e) {
    throw std::runtime_error(
        file.string() + " was made from the features of the run " + clusters.source_run +
        " (its source_run), and images it has not clustered are assigned with that run's "
        "features, but the run cannot be opened (moved or removed?): " +
        e.what());
  }
}

at::Tensor nearest_centroids(TrainedRun& source, std::shared_ptr<const Dataset> data,
                             const at::Tensor& centroids) {
  LoaderOptions options;
  options.batch_size = source.config.settings.train.batch;
  options.workers = source.config.settings.run.workers;
  options.shuffle = false;
  options.drop_last = false;
  const ViewRecipe recipe = make_recipe("eval", Params(), source.shape.image_size);
  const at::Tensor f = l2_normalize(
      extract_features(*source.model.backbone, std::move(data), recipe, options, source.device)
          .features);
  return f.mm(centroids.to(f.scalar_type()).t()).argmax(1);
}

std::shared_ptr<const Dataset> with_clusters(std::shared_ptr<const Dataset> data,
                                             const at::Tensor& clusters) {
  if (clusters.dim() != 1 || clusters.numel() != data->size())
    throw std::logic_error("with_clusters: " + std::to_string(clusters.numel()) +
                           " cluster ids for " + data->describe());
  return std::make_shared<ClusteredDataset>(std::move(data), to_vector(clusters));
}

EvalClusters::EvalClusters(const std::string& setting, const Registry& registry,
                           spdlog::logger& log)
    : file_(cluster_file_path(setting)), registry_(registry), log_(log) {
  try {
    clusters_ = read_cluster_file(file_);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("data.clusters: ") + e.what());
  }
}

EvalClusters::~EvalClusters() = default;

std::shared_ptr<const Dataset> EvalClusters::assign(std::shared_ptr<const Dataset> data,
                                                    const DataSettings& settings) {
  if (same_data(clusters_.data, data_identity(*data, settings))) {
    log_.info("cluster ids of {}: the assignment stored in {} (Sinkhorn-balanced)",
              data->describe(), file_.string());
    return with_clusters(std::move(data), clusters_.assignment);
  }
  if (!source_) {
    source_ = std::make_unique<TrainedRun>(open_cluster_source(clusters_, file_, registry_));
    log_.info(
        "cluster ids of the sets {} has not clustered: nearest centroid of the features of {}",
        file_.string(), clusters_.source_run);
  }
  const at::Tensor nearest = nearest_centroids(*source_, data, clusters_.centroids);
  const std::int64_t m = clusters_.centroids.size(0);
  log_.info("cluster ids of {}: nearest centroid, {} of {} clusters used", data->describe(),
            at::bincount(nearest, {}, m).gt(0).sum().item<std::int64_t>(), m);
  return with_clusters(std::move(data), nearest);
}

}  // namespace wb
