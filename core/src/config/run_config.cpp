#include "config/run_config.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "config/tree.h"
#include "config/validate.h"
#include "workbench/registry.h"

namespace wb {

namespace {

using config::format_key;
using config::format_real;

std::string canonical_value(const Value& value);

template <class T, class F>
std::string list(const std::vector<T>& xs, F f) {
  std::string out = "[";
  for (std::size_t i = 0; i < xs.size(); ++i) out += (i ? ", " : "") + f(xs[i]);
  return out + "]";
}

std::string int_text(std::int64_t i) {
  return std::to_string(i);
}

std::string canonical_value(const Value& value) {
  struct Visitor {
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(std::int64_t i) const { return int_text(i); }
    std::string operator()(double d) const { return format_real(d); }
    std::string operator()(const std::string& s) const { return toml_string(s); }
    std::string operator()(const std::vector<std::int64_t>& v) const { return list(v, int_text); }
    std::string operator()(const std::vector<double>& v) const { return list(v, format_real); }
    std::string operator()(const std::vector<std::string>& v) const { return list(v, toml_string); }
    std::string operator()(const std::shared_ptr<const PluginRef>& p) const {
      // A nested plugin switched off is written as its (empty) name; see validate.cpp.
      if (!p || p->name.empty()) return "\"\"";
      std::string out = "{ plugin = " + toml_string(p->name);
      for (const auto& [k, v] : p->params.values())
        out += ", " + format_key(k) + " = " + canonical_value(v);
      return out + " }";
    }
  };
  return std::visit(Visitor{}, value);
}

void write_params(std::string& out, const Params& params) {
  for (const auto& [k, v] : params.values())
    out += format_key(k) + " = " + canonical_value(v) + "\n";
}

void write_table(std::string& out, const std::string& header, const Params& params) {
  out += "\n[" + header + "]\n";
  write_params(out, params);
}

// A table without one key while it holds `unset` (its default): keys added later leave the
// ids of configurations that do not use them as they were.
void write_table_without(std::string& out, const std::string& header, const Params& params,
                         const std::string& key, const std::string& unset) {
  out += "\n[" + header + "]\n";
  for (const auto& [k, v] : params.values()) {
    if (k == key && canonical_value(v) == unset) continue;
    out += format_key(k) + " = " + canonical_value(v) + "\n";
  }
}

void write_plugin(std::string& out, const std::string& header, const PluginConfig& plugin) {
  out += "\n" + header + "\nplugin = " + toml_string(plugin.plugin) + "\n";
  write_params(out, plugin.params);
}

}  // namespace

std::string canonical_toml(const RunConfig& c, bool with_evaluators) {
  std::string out;
  write_params(out, c.run);
  if (!c.backbone.plugin.empty()) write_plugin(out, "[backbone]", c.backbone);
  write_table_without(out, "data", c.data, "clusters", "\"\"");  // MoCE's data.clusters
  for (const auto& [name, params] : c.datasets)
    write_table_without(out, "datasets." + format_key(name), params, "clusters", "\"\"");
  if (!c.gate.plugin.empty()) write_plugin(out, "[gate]", c.gate);
  // Only when set, so that the ids of runs without it stay as they were.
  if (c.init.has("from") && !c.init.text("from").empty())
    write_table_without(out, "init", c.init, "expert_noise", "0.01");
  for (const auto& loss : c.losses) write_plugin(out, "[[losses]]", loss);
  // train.expert_parallel only when on: the ids of runs from before it stay as they were.
  write_table_without(out, "train", c.train, "expert_parallel", "false");
  write_table(out, "views", c.views);
  write_table(out, "views.view1", c.view1);
  write_table(out, "views.view2", c.view2);
  if (with_evaluators)
    for (const auto& e : c.evaluators) write_plugin(out, "[[evaluators]]", e);
  return out;
}

std::uint64_t fnv1a64(const std::string& text) {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string config_id(const RunConfig& config) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(fnv1a64(canonical_toml(config, false))));
  return std::string(hex, 12);
}

RunConfig parse_run_config(const std::string& toml_text, const std::string& origin,
                           const Registry& registry) {
  config::Node root = config::parse_toml(toml_text, origin);
  RunConfig rc = config::validate_run(root, registry, "the configuration");
  rc.toml = canonical_toml(rc);
  rc.id = config_id(rc);
  return rc;
}

namespace {

// Carries the keys that plugins declare as moved (ParamSpec::moved) to their new place, so that
// a config.toml written before the move still loads. Notes what it did in `notes`.
void migrate_moved_keys(config::Node& root, const Registry& registry,
                        std::vector<std::string>& notes) {
  struct Table {
    config::Node* node;
    Kind kind;
    std::string path;
  };
  std::vector<Table> tables;
  auto add = [&](config::Node* node, Kind kind, const std::string& path) {
    if (node && node->is_table()) tables.push_back({node, kind, path});
  };
  add(root.find("backbone"), Kind::Backbone, "backbone");
  add(root.find("gate"), Kind::Gate, "gate");
  for (const auto& [key, kind] : {std::pair<const char*, Kind>{"losses", Kind::Loss},
                                  std::pair<const char*, Kind>{"evaluators", Kind::Evaluator}})
    if (config::Node* list = root.find(key); list && list->is_array())
      for (auto& item : list->items) add(&item, kind, key + ("." + config::plugin_of(item)));

  struct Moved {
    std::string from;
    config::Node value;
  };
  std::map<std::string, std::vector<Moved>> by_target;
  for (const Table& t : tables) {
    const Entry* entry = registry.find(t.kind, config::plugin_of(*t.node));
    if (!entry) continue;  // validation names the unknown plugin
    auto& members = t.node->members;
    for (auto it = members.begin(); it != members.end();) {
      const ParamSpec* spec = entry->param(it->key);
      if (spec && !spec->moved_to.empty()) {
        by_target[spec->moved_to].push_back({t.path + "." + it->key, it->value});
        it = members.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& entry : by_target) {
    const std::string& target =
        entry.first;  // a named variable: lambdas may not capture a binding in C++17
    const std::vector<Moved>& moved = entry.second;
    const Moved& first = moved.front();
    auto differ = [&](const config::Node& value, const std::string& what) {
      config::fail(value.pos, what + " = " + config::literal(value) + " and " + first.from + " = " +
                                  config::literal(first.value) +
                                  " differ, but this version has one " + target +
                                  " for both; set " + target + " in this file to the value wanted");
    };
    std::string from;
    for (const Moved& m : moved) {
      if (!config::same_value(m.value, first.value)) differ(m.value, m.from);
      from += (from.empty() ? "" : " and ") + m.from;
    }
    if (const config::Node* set = config::lookup(root, target, first.value.pos)) {
      if (!config::same_value(*set, first.value)) differ(*set, target);
      notes.push_back(from + " dropped: " + target + " holds the same value");
      continue;
    }
    config::assign(root, target, first.value, first.value.pos);
    notes.push_back(from + " moved to " + target + " = " + config::literal(first.value));
  }
}

}  // namespace

std::string locate_referenced_run(const std::string& written, const std::filesystem::path& anchor) {
  namespace fs = std::filesystem;
  if (written.empty()) return written;
  fs::path run = anchor.lexically_normal();
  if (run.filename().empty()) run = run.parent_path();  // a trailing slash
  const fs::path folder = run.parent_path();            // <runs>/<experiment>
  const fs::path experiment = folder.filename();
  // What follows the last "<experiment>" component: the point (and maybe a file in it).
  fs::path tail;
  bool found = false;
  for (const fs::path& part : fs::path(written).lexically_normal()) {
    if (found) tail /= part;
    if (!experiment.empty() && part == experiment) {
      tail.clear();
      found = true;
    }
  }
  if (!found || tail.empty()) return written;
  std::error_code ec;
  const fs::path own = folder / tail;
  return fs::exists(own, ec) ? own.string() : written;
}

RunConfig load_run_config(const std::filesystem::path& file, const Registry& registry) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ConfigError(file.string(), 0, 0, "cannot read the configuration file");
  std::ostringstream text;
  text << in.rdbuf();
  config::Node root = config::parse_toml(text.str(), file.string());
  std::vector<std::string> notes;
  migrate_moved_keys(root, registry, notes);
  RunConfig rc = config::validate_run(root, registry, "the configuration");
  rc.toml = canonical_toml(rc);
  rc.id = config_id(rc);
  rc.settings.data.clusters = locate_referenced_run(rc.settings.data.clusters, file.parent_path());
  for (const auto& note : notes) rc.migrated.push_back(file.string() + ": " + note);
  return rc;
}

}  // namespace wb
