// What the checks made before any point runs (config/point_checks.h) learn from this host: the
// shapes of the data sets' images (read cheaply, data/datasets.h) and whether LibTorch finds a
// CUDA device.
#pragma once

#include "config/point_checks.h"

namespace wb {

PointEnvironment host_environment();

}  // namespace wb
