#include "config/run_config.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "config/tree.h"
#include "config/validate.h"
#include "workbench/registry.h"

namespace wb {

namespace {

using config::format_key;
using config::format_real;
using config::quote;

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
    std::string operator()(const std::string& s) const { return quote(s); }
    std::string operator()(const std::vector<std::int64_t>& v) const { return list(v, int_text); }
    std::string operator()(const std::vector<double>& v) const { return list(v, format_real); }
    std::string operator()(const std::vector<std::string>& v) const { return list(v, quote); }
    std::string operator()(const std::shared_ptr<const PluginRef>& p) const {
      // A nested plugin switched off is written as its (empty) name; see validate.cpp.
      if (!p || p->name.empty()) return "\"\"";
      std::string out = "{ plugin = " + quote(p->name);
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

void write_plugin(std::string& out, const std::string& header, const PluginConfig& plugin) {
  out += "\n" + header + "\nplugin = " + quote(plugin.plugin) + "\n";
  write_params(out, plugin.params);
}

}  // namespace

std::string canonical_toml(const RunConfig& c, bool with_evaluators) {
  std::string out;
  write_params(out, c.run);
  if (!c.backbone.plugin.empty()) write_plugin(out, "[backbone]", c.backbone);
  write_table(out, "data", c.data);
  for (const auto& [name, params] : c.datasets)
    write_table(out, "datasets." + format_key(name), params);
  if (!c.gate.plugin.empty()) write_plugin(out, "[gate]", c.gate);
  // Only when set, so that the ids of runs without it stay as they were.
  if (c.init.has("from") && !c.init.text("from").empty()) write_table(out, "init", c.init);
  for (const auto& loss : c.losses) write_plugin(out, "[[losses]]", loss);
  write_table(out, "train", c.train);
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

RunConfig load_run_config(const std::filesystem::path& file, const Registry& registry) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ConfigError(file.string(), 0, 0, "cannot read the configuration file");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_run_config(text.str(), file.string(), registry);
}

}  // namespace wb
