// The points of an experiment's cluster and deploy stages (docs/design.md, "Stages"): each is
// run as a child process `workbench _stage DIR`, which reads DIR/stage.toml (written by the
// sweep from the experiment file) and runs `workbench cluster` (into DIR/clusters.h5) or
// `workbench deploy` (into DIR) followed by the stage's evaluators on the deployed model.
#pragma once

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "run/point.h"

namespace wb {

// `<exe> _stage DIR --threads T [--plugin-path P]...`.
std::vector<std::string> stage_command(const std::string& exe, const PointOptions& options);

// Runs DIR/stage.toml in this process; returns the exit status (0 done, 1 failed, 2 a stage
// file that cannot be read).
int stage_main(const PointOptions& options, std::ostream& err);

}  // namespace wb
