// Augmented views that remember where they came from (docs/methods.md §4-5), and the loader that
// prepares batches of them ahead of the trainer.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "workbench/batch.h"
#include "workbench/data.h"

namespace wb {

// Every step of the pipeline, with its probability and range. Geometry steps (crop, flip)
// update the view's box and flip flag; colour steps leave them alone.
struct ViewRecipe {
  std::int64_t size = 0;  // output side in pixels; 0 = the data set's image size

  // RandomResizedCrop; when off, the view is the whole image resized (eval: centre crop).
  bool random_crop = true;
  double scale_min = 0.08, scale_max = 1.0;
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
  double center_crop = 1.0;  // eval: fraction of the resized image kept by the centre crop

  double flip_p = 0.5;

  double jitter_p = 0.8;  // colour jitter (on one channel: brightness and contrast only)
  double brightness = 0.4, contrast = 0.4, saturation = 0.2, hue = 0.1;
  double grayscale_p = 0.2;
  double blur_p = 1.0;
  double blur_sigma_min = 0.1, blur_sigma_max = 2.0;  // in pixels at 224 px, scaled with size
  double solarize_p = 0.0;
  double solarize_threshold = 0.5;

  std::vector<double> mean, std;  // per-channel normalisation (empty = the data set's)
};

// Named recipes: "moco1", "moco2" (MoCo v3's two views), "train" (crop + flip, linear probe),
// "eval" (resize / centre crop), "color_only" (moco1's colour steps, no crop, no flip), "mae"
// (MAE pre-training: RandomResizedCrop with scale 0.2-1 + flip, no colour steps).
ViewRecipe view_preset(const std::string& name);

struct LoaderOptions {
  // The global batch: the images that all ranks together take per step.
  std::int64_t batch_size = 256;
  bool shuffle = true;
  bool drop_last = true;
  int workers = 2;         // decode/augment threads
  int prefetch = 4;        // batches prepared ahead (bounded queue)
  std::uint64_t seed = 0;  // same seed, same batches, whatever the number of workers
  // Workers stage batches in page-locked memory (for non-blocking copies to CUDA).
  bool pin_memory = false;
  // Data parallelism (docs/scale.md): rank `rank` of `world` takes its contiguous slice of each
  // global batch, in rank order. The order and every view's random draws depend only on the
  // seed, the epoch and the image's position in the epoch, so the ranks' slices put together
  // are exactly the batch that one process (world = 1) sees.
  int rank = 0, world = 1;
  // next() throws Interrupted when a stop was requested (workbench/stop.h), so that evaluators
  // end at their next batch. The trainer turns it off: it checks the request after each step,
  // where it can write a checkpoint first.
  bool interruptible = true;
};

class Loader {
 public:
  Loader(std::shared_ptr<const Dataset> data, std::vector<ViewRecipe> views, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  void start_epoch(std::int64_t epoch);  // reshuffles (if shuffle) and restarts the workers
  std::optional<Batch> next();           // nullopt at the end of the epoch
  std::int64_t batches_per_epoch() const;
  const Dataset& dataset() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace wb
