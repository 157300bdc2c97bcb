// The core sections of a validated run configuration as typed values, built once when the
// configuration is validated (RunConfig::settings): code reads config.settings.train.batch, not
// config.train.integer("batch"). The schemas (config/schema.cpp) own every name, default and
// range; these structs only carry the values.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "workbench/params.h"

namespace wb {

// Top level: seed, device, threads, workers.
struct RunSettings {
  std::uint64_t seed = 0;
  std::string device;  // auto | cpu | cuda
  int threads = 0;     // intra-op threads per point; 0 = decided by the sweep
  int workers = 0;     // loader threads
};

// [data] and every [datasets.<name>] (docs/design.md): the data set and its subsets.
struct DataSettings {
  std::string dataset;  // fashion_mnist | idx | cifar10 | cifar100 | digits | folder
  std::string path;     // empty: the data set's default place (fashion_mnist)
  std::int64_t image_size = 0;
  std::int64_t num_classes = 0;  // 0 = what the format says (IDX: max label + 1)
  double val_fraction = 0, label_fraction = 1;
  std::int64_t shots = 0;
  std::vector<std::int64_t> classes;  // class filter; empty = all
  bool relabel = true;
  std::int64_t channels = 0;  // 0 = native
  std::uint64_t subset_seed = 0;
  std::int64_t train_limit = 0, test_limit = 0;
  std::string clusters;  // MoCE: a clusters.h5 of `workbench cluster`; empty = none ([data] only)
};

// [views]: the recipe of the training views ([views.view1] / [views.view2] stay Params: only
// the keys a user sets override the preset, see data/view_overrides.h).
struct ViewSettings {
  std::string recipe;  // auto | moco | train
};

// [train]: optimisation, logging, and the two values every contrastive method shares.
struct TrainSettings {
  double epochs = 0;
  std::int64_t steps = 0;  // > 0 overrides epochs
  std::int64_t batch = 0;  // global batch, all processes together
  double base_lr = 0;
  bool linear_lr_scaling = true;  // lr_scaling = "linear": lr = base_lr x batch / 256
  double min_lr = 0, warmup_epochs = 0, weight_decay = 0;
  double beta1 = 0, beta2 = 0;
  double clip_grad = 0;
  std::int64_t log_every = 0, stats_every = 0, checkpoint_every = 0;
  double momentum = 0;     // m0 of the momentum encoder's cosine schedule (docs/methods.md §4)
  double temperature = 0;  // tau of every contrastive term: MoCo's ctr and OGAR's InfoNCE (§4, §5)
  bool bf16 = false;       // precision = "bf16": forward and losses under bf16 autocast (§1)
};

struct Settings {
  RunSettings run;
  DataSettings data;
  std::map<std::string, DataSettings> datasets;
  ViewSettings views;
  TrainSettings train;
};

// From validated tables (every key present).
RunSettings run_settings(const Params& run);
TrainSettings train_settings(const Params& train);
ViewSettings view_settings(const Params& views);
// A [data] table; keys it lacks take the schema's defaults (tools and tests build such tables
// by hand).
DataSettings data_settings(const Params& data);

}  // namespace wb
