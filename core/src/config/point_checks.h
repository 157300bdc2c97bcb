// The checks of one point that its schemas cannot make: every plugin's own check over its
// resolved parameters and the run's shapes (Registry::check, workbench/validation.h), and the
// device. Run by the experiment parser for every point, so that `workbench run` and `--dry-run`
// refuse an impossible point before any point trains (docs/plugins.md, "Checks before anything
// runs"). Free of LibTorch and of the data readers: what only the host can tell (the data sets'
// shapes, its CUDA devices) comes in through PointEnvironment (run/host_environment.h).
#pragma once

#include <cstdint>
#include <functional>

#include "config/run_config.h"
#include "config/settings.h"
#include "config/tree.h"

namespace wb {

// The images a [data] table yields, as far as they are known without reading the data; 0 where
// they are not.
struct DataShapeHint {
  std::int64_t image_size = 0, channels = 0, classes = 0;
};

struct PointEnvironment {
  // The shape of a data set's images; unset: unknown (the checks that need it are skipped).
  std::function<DataShapeHint(const DataSettings&)> data_shape;
  // Whether this host has a CUDA device; unset: device = "cuda" is not checked (run --prepare,
  // whose points run on other hosts).
  std::function<bool()> has_cuda;
};

}  // namespace wb

namespace wb::config {

// `tree` is the point's configuration before validation (its nodes carry the file:line:column
// of every value: the experiment file, a [[point]], a [profile.*] or --set); `config` the same
// validated. Throws ConfigError at the offending key, or at its plugin's table when the key was
// left at its default.
void check_point(const Node& tree, const RunConfig& config, const Registry& registry,
                 const PointEnvironment& environment);

}  // namespace wb::config
