// The checks of one point that its schemas cannot make: every plugin's own check over its
// resolved parameters and the run's shapes (Registry::check, workbench/validation.h), and the
// device. Run by the experiment parser for every point, so that `workbench run` and `--dry-run`
// refuse an impossible point before any point trains (docs/plugins.md, "Checks before anything
// runs").
#pragma once

#include "config/run_config.h"
#include "config/tree.h"

namespace wb::config {

struct PointCheckOptions {
  // device = "cuda" on a host without a CUDA device is refused; off for `run --prepare`, whose
  // points run elsewhere (torchrun, srun).
  bool check_device = true;
};

// `tree` is the point's configuration before validation (its nodes carry the file:line:column
// of every value: the experiment file, a [[point]], a [profile.*] or --set); `config` the same
// validated. Throws ConfigError at the offending key, or at its plugin's table when the key was
// left at its default.
void check_point(const Node& tree, const RunConfig& config, const Registry& registry,
                 const PointCheckOptions& options = {});

}  // namespace wb::config
