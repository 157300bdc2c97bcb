// Validation of configuration trees against ParamSpec schemas: types, ranges, choices, nested
// plugins (through the Registry), defaults. Every problem is a ConfigError at the position of
// the offending key or value.
#pragma once

#include <string>
#include <vector>

#include "config/run_config.h"
#include "config/tree.h"
#include "workbench/params.h"

namespace wb::config {

// What a table is, for messages: its dotted address ("train", "losses.ogar") and, for plugin
// tables, which plugin it configures ("loss 'ogar'").
struct Scope {
  std::string path;
  std::string what;
};

// Validates `table` against `specs` and fills in defaults. Keys listed in `structural` are
// valid (they are named in the list of valid keys) but left to the caller.
Params validate_params(const Node& table, const std::vector<ParamSpec>& specs,
                       const Registry& registry, const Scope& scope, const std::string& owner,
                       const std::vector<std::string>& structural = {});

// A plugin of `kind`, given as its name or as { plugin = "...", ... }.
PluginConfig validate_plugin(const Node& node, Kind kind, const Registry& registry,
                             const std::string& path);

// A whole run configuration. `root_name` names the root table in messages ("[base]").
RunConfig validate_run(const Node& root, const Registry& registry, const std::string& root_name);

// The address of element i of a plugin list: "losses.ogar" when the plugin names it
// unambiguously, else "losses.1".
std::string element_path(const std::string& list, const Node& items, std::size_t i);

// "; did you mean 'epochs'?" when one candidate is close to `word`, else "".
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);

std::string join(const std::vector<std::string>& items, const std::string& separator = ", ");

}  // namespace wb::config
