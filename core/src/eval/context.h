// What evaluators see of a run (wb::EvalContext): data sets by name, view recipes, and CLS
// features extracted once per run and cached (in memory and under eval/), so many heads cost
// little more than one.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>

#include "config/run_config.h"
#include "train/model.h"
#include "workbench/evaluator.h"

namespace spdlog {
class logger;
}

namespace wb {

class EvalClusters;

class RunEvalContext final : public EvalContext {
 public:
  RunEvalContext(const RunConfig& config, const Registry& registry, Model& model,
                 c10::Device device, int threads, std::filesystem::path output_dir,
                 spdlog::logger& log, std::string cache_tag);
  ~RunEvalContext() override;
  RunEvalContext(const RunEvalContext&) = delete;
  RunEvalContext& operator=(const RunEvalContext&) = delete;

  Backbone& backbone() override { return *model_.backbone; }
  std::vector<Loss*> losses() override;
  c10::Device device() const override { return device_; }
  std::uint64_t seed() const override;
  int threads() const override { return threads_; }
  // With data.clusters (a cluster-gated MoCE model), every data set carries its images'
  // cluster ids (cluster/assign.h), which the Loader puts into the batches.
  std::shared_ptr<const Dataset> dataset(const std::string& name, Split split) override;
  ViewRecipe recipe(const std::string& preset) override;
  LoaderOptions loader_options() const override;
  FeatureSet features(const std::string& dataset, Split split, std::int64_t view = 0) override;
  TrainableCopy trainable_copy() override;
  std::filesystem::path output_dir() const override { return output_dir_; }
  void info(const std::string& message) override;

 private:
  const DataSettings& data_settings(const std::string& name) const;
  std::shared_ptr<const Dataset> opened(const std::string& name, Split split);  // no cluster ids

  const RunConfig& config_;
  const Registry& registry_;
  Model& model_;
  c10::Device device_;
  int threads_;
  std::filesystem::path output_dir_;
  spdlog::logger& log_;
  std::string cache_tag_;  // changes when the weights change (checkpoint step)
  std::map<std::pair<std::string, int>, std::shared_ptr<const Dataset>> opened_, datasets_;
  std::unique_ptr<EvalClusters> clusters_;  // with data.clusters, at the first data set
  std::map<std::tuple<std::string, int, std::int64_t>, FeatureSet> features_;
};

// Extracts CLS features of a whole data set with the backbone in eval mode, every image
// claiming view `view` (RoutingContext::view).
FeatureSet extract_features(Backbone& backbone, std::shared_ptr<const Dataset> data,
                            const ViewRecipe& recipe, const LoaderOptions& options,
                            c10::Device device, std::int64_t view = 0);

}  // namespace wb
