// Evaluator plugins measure a trained backbone: probes, few-shot transfer, routing probes.
// They run at the end of a run and on demand (`workbench eval`), from the run's checkpoint.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "workbench/backbone.h"
#include "workbench/data.h"
#include "workbench/loss.h"
#include "workbench/views.h"

namespace wb {

// A copy of the trained model that an evaluator may train (fine-tuning) without touching the
// model other evaluators see.
struct TrainableCopy {
  std::shared_ptr<Backbone> backbone;
  std::vector<std::shared_ptr<Loss>> losses;
};

struct FeatureSet {
  at::Tensor features;  // [N, D] float, CPU
  at::Tensor labels;    // [N] int64, CPU
};

// What the host offers an evaluator. Data set names: "" is the run's own data set; others are
// the entries of the run's [datasets] table (e.g. a transfer set for few-shot evaluation).
class EvalContext {
 public:
  virtual ~EvalContext() = default;
  virtual Backbone& backbone() = 0;  // in eval mode: no gate noise
  virtual std::vector<Loss*> losses() = 0;
  virtual c10::Device device() const = 0;
  virtual std::uint64_t seed() const = 0;
  virtual int threads() const = 0;
  virtual std::shared_ptr<const Dataset> dataset(const std::string& name, Split split) = 0;
  // A named preset (views.h) at the model's input size. Its mean/std stay empty, so a Loader
  // normalises with the statistics of whichever data set it reads.
  virtual ViewRecipe recipe(const std::string& preset) = 0;
  virtual LoaderOptions loader_options() const = 0;  // the run's workers, batch size and seed
  // CLS features under the "eval" recipe, extracted once per run and view and cached. `view` is
  // the view index the forward passes claim (RoutingContext::view): with a gate that routes by
  // view (the sep-ViT's fixed gate), the expert path measured.
  virtual FeatureSet features(const std::string& dataset, Split split, std::int64_t view = 0) = 0;
  virtual TrainableCopy trainable_copy() = 0;            // on device(), in train mode
  virtual std::filesystem::path output_dir() const = 0;  // where PNGs and other files go
  virtual void info(const std::string& message) = 0;     // into the run's log
};

struct EvalResult {
  std::map<std::string, double> scalars;     // e.g. "top1": into the report's tables
  std::map<std::string, at::Tensor> arrays;  // e.g. per-layer curves, stored in metrics.h5
  std::vector<std::string> files;            // files written under output_dir()
};

class Evaluator {
 public:
  virtual ~Evaluator() = default;
  virtual EvalResult evaluate(EvalContext& context) = 0;
};

}  // namespace wb
