// The resolved, validated configuration of one run (one grid point). Produced by the
// experiment parser (experiment.h), written to runs/<exp>/<id>/config.toml, read back by the
// child process that executes the point.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "config/error.h"
#include "config/settings.h"
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
  PluginConfig gate;  // plugin empty when no gate is configured
  std::vector<PluginConfig> losses;
  std::vector<PluginConfig> evaluators;
  Params train;  // [train]
  Params init;   // [init]: initial weights; part of the id only when `from` is set

  Settings settings;  // the core sections above as typed values (config/settings.h)

  std::string toml;  // canonical TOML of the whole resolved configuration
  std::string id;    // point id: 12 hex digits of FNV-1a over `toml` without evaluators
  // load_run_config: what it changed in a file written by an older version (keys that moved),
  // one line each, for the caller to show as warnings.
  std::vector<std::string> migrated;
};

// Canonical TOML: keys sorted (a plugin table starts with `plugin`), every default present, no
// comments, numbers normalised (a float key holds a float even where an integer was written;
// floats in the shortest form that reads back exactly). [[evaluators]] come last, so the text
// without them, which the id hashes, is a prefix of the whole.
std::string canonical_toml(const RunConfig& config, bool with_evaluators = true);

// 64-bit FNV-1a.
std::uint64_t fnv1a64(const std::string& text);

// The id of a configuration (design.md, "A point and its id"): the first 12 hex digits of
// fnv1a64(canonical_toml(config, false)). Evaluators are left out so that adding one to a
// finished sweep does not retrain it.
std::string config_id(const RunConfig& config);

// Errors of the two functions below are ConfigError (config/error.h) naming file, line, column.

// A run directory that a run's files name ("@stage" references, resolved by the launcher to
// "<runs>/<experiment>/<id>" relative to its working directory; a cluster file's source run),
// looked up from `anchor`, a run directory of the same runs folder: where the reference names a
// point of anchor's experiment ("<experiment>/<id>[/more]") and anchor's folder holds it, that
// point; else the reference as written. So a runs folder that moved, was copied, or is read
// from another working directory finds its own points. Empty stays empty.
std::string locate_referenced_run(const std::string& written, const std::filesystem::path& anchor);

// Reads a resolved configuration back (config.toml of a run directory). Validates it against
// the registry's schemas again: a plugin may have changed since the point was queued. A key a
// plugin declares as moved (ParamSpec::moved) is carried to its new place, with a note in
// `migrated`; two plugins that held different values for the same new key are an error.
// settings.data.clusters is located from the run directory (locate_referenced_run); the
// configuration itself, and so the id, keeps what was written.
RunConfig load_run_config(const std::filesystem::path& file, const Registry& registry);

// Parses and validates a configuration given as TOML text (e.g. tests); `origin` names it in
// errors.
RunConfig parse_run_config(const std::string& toml_text, const std::string& origin,
                           const Registry& registry);

}  // namespace wb
