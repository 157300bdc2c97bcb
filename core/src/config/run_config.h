// The resolved, validated configuration of one run (one grid point). Produced by the
// experiment parser (experiment.h), written to runs/<exp>/<id>/config.toml, read back by the
// child process that executes the point.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "workbench/params.h"

namespace wb {

class Registry;

struct PluginConfig {
  std::string plugin;
  Params params;  // validated, every default filled in
};

struct RunConfig {
  Params run;                              // top-level scalars: seed, device, threads, workers
  Params data;                             // [data]
  std::map<std::string, Params> datasets;  // [datasets.<name>]
  Params views;                            // [views] (recipe)
  Params view1, view2;                     // [views.view1], [views.view2] overrides (set keys only)
  PluginConfig backbone;
  PluginConfig gate;                       // plugin empty when no gate is configured
  std::vector<PluginConfig> losses;
  std::vector<PluginConfig> evaluators;
  Params train;                            // [train]

  std::string toml;  // canonical TOML of the whole resolved configuration
};

// Reads a resolved configuration back (config.toml of a run directory). Validates it against
// the registry's schemas again: a plugin may have changed since the point was queued.
RunConfig load_run_config(const std::filesystem::path& file, const Registry& registry);

// Parses and validates a configuration given as TOML text (e.g. tests); `origin` names it in errors.
RunConfig parse_run_config(const std::string& toml_text, const std::string& origin,
                           const Registry& registry);

}  // namespace wb
