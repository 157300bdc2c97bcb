// Trains one point inside its process: seeds, device, communicator, the data set (this rank's
// shard), the model, provenance into metrics.h5, the loader, then the training loop (resuming
// from checkpoints/last.pt when present). The point's life around it (status, logging, ranks,
// evaluation) is run/point.h's.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <memory>

#include "config/run_config.h"
#include "dist/rendezvous.h"
#include "train/model.h"
#include "train/trainer.h"

namespace wb {

class Registry;
class Communicator;

struct TrainContext {
  std::filesystem::path dir;  // runs/<experiment>/<id>, or <id>/rank<r> for rank r > 0
  const RunConfig* config = nullptr;
  const Registry* registry = nullptr;
  TrainOutput output;  // metrics, log, progress
  int threads = 0;     // resolved intra-op threads (recorded in the provenance)
  // Data-parallel ranks of this point and how they meet (world > 1). Rank 0 owns the run
  // directory; rank r > 0 trains in its own dir (log, metrics, checkpoints).
  Rendezvous rendezvous;
};

struct TrainedPoint {
  Model model;
  c10::Device device = c10::Device(c10::kCPU);
  std::unique_ptr<Communicator> comm;  // the model's losses hold it
  std::int64_t steps = 0;              // steps trained in all (what the weights are)
};

TrainedPoint train_point(const TrainContext& context);

}  // namespace wb
