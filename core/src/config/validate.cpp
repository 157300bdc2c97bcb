#include "config/validate.h"

#include <algorithm>
#include <cmath>

#include "config/schema.h"
#include "workbench/registry.h"

namespace wb::config {

std::string join(const std::vector<std::string>& items, const std::string& separator) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? separator : "") + items[i];
  return out;
}

namespace {

// Optimal string alignment distance: edits plus transpositions ("alpah" -> "alpha" is one).
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i)
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

std::string shorten(std::string s) {
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

std::string got(const Node& n) {
  return std::string("got ") + node_type_name(n) + " " + shorten(literal(n));
}

std::string key_path(const Scope& scope, const std::string& key) {
  return scope.path.empty() ? key : scope.path + "." + key;
}

std::string where_text(const Scope& scope) {
  if (scope.path.empty()) return scope.what.empty() ? "the top level" : scope.what;
  return scope.what.empty() ? scope.path : scope.path + " (" + scope.what + ")";
}

std::string available(const Registry& registry, Kind kind) {
  std::vector<std::string> names = registry.names(kind);
  return names.empty() ? "no " + std::string(kind_name(kind)) + " plugins are loaded"
                       : "available: " + join(names);
}

bool in_bounds(double v, const ParamSpec& s) {
  if (s.lo && !(s.lo_open ? v > *s.lo : v >= *s.lo)) return false;
  if (s.hi && !(s.hi_open ? v < *s.hi : v <= *s.hi)) return false;
  return true;
}

[[noreturn]] void wrong_type(const Node& n, const ParamSpec& s, const std::string& label) {
  fail(n.pos, label + ": expected " + s.describe() + ", " + got(n));
}

// One element of a list parameter, or the scalar itself.
void check_bounds(const Node& n, double v, const ParamSpec& s, const std::string& label) {
  if (!in_bounds(v, s))
    fail(n.pos, label + " = " + literal(n) + " is out of range (expected " + s.describe() + ")");
}

// nan and inf parse as TOML floats; no setting means anything with them (epochs = inf would
// train one step, warmup_epochs = inf overflow the step arithmetic), so none is accepted.
void check_finite(const Node& n, double v, const std::string& label) {
  if (!std::isfinite(v)) fail(n.pos, label + " = " + literal(n) + " is not a finite number");
}

void check_choice(const Node& n, const ParamSpec& s, const std::string& label) {
  if (s.choices.empty() || std::find(s.choices.begin(), s.choices.end(), n.text) != s.choices.end())
    return;
  fail(n.pos, label + " = " + literal(n) + " is not allowed" + did_you_mean(n.text, s.choices) +
                  " (expected " + s.describe() + ")");
}

double number(const Node& n) {
  return n.type == Node::Type::Int ? static_cast<double>(n.integer) : n.real;
}

// Checks the elements of a list parameter with `element(item, label)`.
template <class F>
void each_item(const Node& n, const ParamSpec& s, const std::string& label, F element) {
  if (!n.is_array()) wrong_type(n, s, label);
  for (std::size_t i = 0; i < n.items.size(); ++i)
    element(n.items[i], label + "[" + std::to_string(i) + "]");
}

Value check_value(const Node& n, const ParamSpec& s, const Registry& registry,
                  const std::string& label) {
  using T = Node::Type;
  switch (s.type) {
    case ParamType::Bool:
      if (n.type != T::Bool) wrong_type(n, s, label);
      return n.boolean;
    case ParamType::Int:
      if (n.type != T::Int) wrong_type(n, s, label);
      check_bounds(n, static_cast<double>(n.integer), s, label);
      return n.integer;
    case ParamType::Float:
      // Integers are accepted where floats are expected ("epochs = 10").
      if (!n.is_number()) wrong_type(n, s, label);
      check_finite(n, number(n), label);
      check_bounds(n, number(n), s, label);
      return number(n);
    case ParamType::String:
      if (!n.is_string()) wrong_type(n, s, label);
      check_choice(n, s, label);
      return n.text;
    case ParamType::IntList: {
      std::vector<std::int64_t> out;
      each_item(n, s, label, [&](const Node& item, const std::string& l) {
        if (item.type != T::Int) wrong_type(item, s, l);
        check_bounds(item, static_cast<double>(item.integer), s, l);
        out.push_back(item.integer);
      });
      return out;
    }
    case ParamType::FloatList: {
      std::vector<double> out;
      each_item(n, s, label, [&](const Node& item, const std::string& l) {
        if (!item.is_number()) wrong_type(item, s, l);
        check_finite(item, number(item), l);
        check_bounds(item, number(item), s, l);
        out.push_back(number(item));
      });
      return out;
    }
    case ParamType::StringList: {
      std::vector<std::string> out;
      each_item(n, s, label, [&](const Node& item, const std::string& l) {
        if (!item.is_string()) wrong_type(item, s, l);
        check_choice(item, s, l);
        out.push_back(item.text);
      });
      return out;
    }
    case ParamType::Plugin: {
      if (!n.is_string() && !n.is_table()) wrong_type(n, s, label);
      if (n.is_string() && n.text.empty() && s.default_value) {
        // "" switches an optional nested plugin off, when its default is off too.
        const auto* def = std::get_if<std::shared_ptr<const PluginRef>>(&*s.default_value);
        if (def && *def && (*def)->name.empty()) return *def;
      }
      PluginConfig pc = validate_plugin(n, s.plugin_kind, registry, label);
      auto ref = std::make_shared<PluginRef>();
      ref->kind = s.plugin_kind;
      ref->name = pc.plugin;
      ref->params = std::move(pc.params);
      return std::shared_ptr<const PluginRef>(std::move(ref));
    }
  }
  wrong_type(n, s, label);
}

// The default of a Plugin-typed parameter, with the nested plugin's own defaults filled in.
Value plugin_default(const ParamSpec& s, const Node& table, const Registry& registry,
                     const std::string& label) {
  const auto* def = std::get_if<std::shared_ptr<const PluginRef>>(&*s.default_value);
  if (!def || !*def || (*def)->name.empty()) return *s.default_value;
  const Entry* entry = registry.find(s.plugin_kind, (*def)->name);
  if (!entry)
    fail(table.pos, label + ": the default " + kind_name(s.plugin_kind) + " '" + (*def)->name +
                        "' is not loaded; set " + label + " to one that is (" +
                        available(registry, s.plugin_kind) + ")");
  auto ref = std::make_shared<PluginRef>();
  ref->kind = s.plugin_kind;
  ref->name = entry->name;
  ref->params = validate_params(
      Node::table(table.pos), entry->params, registry,
      Scope{label, std::string(kind_name(s.plugin_kind)) + " '" + entry->name + "'"},
      std::string(kind_name(s.plugin_kind)) + " " + entry->name);
  return std::shared_ptr<const PluginRef>(std::move(ref));
}

}  // namespace

std::string element_path(const std::string& list, const Node& items, std::size_t i) {
  std::string name = plugin_of(items.items[i]);
  std::size_t same = 0;
  for (const auto& item : items.items) same += plugin_of(item) == name;
  if (!name.empty() && same == 1 && name.find('.') == std::string::npos) return list + "." + name;
  return list + "." + std::to_string(i);
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  const std::size_t limit = word.size() <= 4 ? 1 : 2;
  std::size_t best = limit + 1;
  const std::string* pick = nullptr;
  bool tie = false;
  for (const auto& c : candidates) {
    std::size_t d = edit_distance(word, c);
    if (d < best) {
      best = d;
      pick = &c;
      tie = false;
    } else if (d == best) {
      tie = true;
    }
  }
  if (!pick || tie || best == 0) return "";
  return "; did you mean '" + *pick + "'?";
}

Params validate_params(const Node& table, const std::vector<ParamSpec>& specs,
                       const Registry& registry, const Scope& scope, const std::string& owner,
                       const std::vector<std::string>& structural) {
  if (!table.is_table()) fail(table.pos, where_text(scope) + ": expected a table, " + got(table));
  Params params(owner);
  for (const auto& m : table.members) {
    if (std::find(structural.begin(), structural.end(), m.key) != structural.end()) continue;
    auto spec = std::find_if(specs.begin(), specs.end(),
                             [&](const ParamSpec& s) { return s.name == m.key; });
    if (spec != specs.end() && !spec->moved_to.empty())
      fail(m.key_pos, key_path(scope, m.key) + " has moved to " + spec->moved_to +
                          (spec->doc.empty() ? "" : " (" + spec->doc + ")") + "; set it there");
    if (spec == specs.end()) {
      std::vector<std::string> valid = structural;
      for (const auto& s : specs)
        if (s.moved_to.empty()) valid.push_back(s.name);
      std::sort(valid.begin(), valid.end());
      std::string list =
          valid.empty() ? " (it takes no keys)" : " (valid keys: " + join(valid) + ")";
      fail(m.key_pos, "unknown key '" + m.key + "' in " + where_text(scope) +
                          did_you_mean(m.key, valid) + list);
    }
    params.set(m.key, check_value(m.value, *spec, registry, key_path(scope, m.key)));
  }
  for (const auto& s : specs) {
    if (params.has(s.name) || !s.default_value) continue;  // moved keys have no default
    if (s.type == ParamType::Plugin)
      params.set(s.name, plugin_default(s, table, registry, key_path(scope, s.name)));
    else
      params.set(s.name, *s.default_value);
  }
  return params;
}

PluginConfig validate_plugin(const Node& node, Kind kind, const Registry& registry,
                             const std::string& path) {
  const std::string kind_text = kind_name(kind);
  const Node* name = nullptr;
  if (node.is_string()) {
    name = &node;
  } else if (node.is_table()) {
    name = node.find("plugin");
    if (!name)
      fail(node.pos, path + ": missing 'plugin', the name of the " + kind_text + " (" +
                         available(registry, kind) + ")");
    if (!name->is_string())
      fail(name->pos,
           path + ".plugin: expected the name of a " + kind_text + " plugin, " + got(*name));
  } else {
    fail(node.pos, path + ": expected a " + kind_text +
                       " plugin name or a table { plugin = \"...\", ... }, " + got(node));
  }
  const Entry* entry = registry.find(kind, name->text);
  if (!entry)
    fail(name->pos, path + ": unknown " + kind_text + " plugin '" + name->text + "'" +
                        did_you_mean(name->text, registry.names(kind)) + " (" +
                        available(registry, kind) + ")");
  PluginConfig out;
  out.plugin = entry->name;
  const Node table = node.is_table() ? node : Node::table(node.pos);
  out.params = validate_params(table, entry->params, registry,
                               Scope{path, kind_text + " '" + entry->name + "'"},
                               kind_text + " " + entry->name, {"plugin"});
  return out;
}

namespace {

const Node& section(const Node& root, const std::string& key, const Node& empty) {
  const Node* n = root.find(key);
  if (!n) return empty;
  if (!n->is_table()) fail(n->pos, key + ": expected a table, " + got(*n));
  return *n;
}

std::vector<PluginConfig> plugin_list(const Node& list, Kind kind, const Registry& registry,
                                      const std::string& key) {
  if (!list.is_array())
    fail(list.pos, key + ": expected a list of " + kind_name(kind) +
                       " plugins ([{ plugin = \"...\" }, ...]), " + got(list));
  std::vector<PluginConfig> out;
  for (std::size_t i = 0; i < list.items.size(); ++i)
    out.push_back(validate_plugin(list.items[i], kind, registry, element_path(key, list, i)));
  return out;
}

}  // namespace

RunConfig validate_run(const Node& root, const Registry& registry, const std::string& root_name) {
  static const std::vector<std::string> structural = {
      "data", "datasets", "views", "backbone", "gate", "losses", "evaluators", "train", "init"};
  const Node empty = Node::table(root.pos);
  RunConfig rc;
  rc.run = validate_params(root, run_schema(), registry, Scope{"", root_name}, "run", structural);

  rc.data =
      validate_params(section(root, "data", empty), data_schema(), registry, {"data", ""}, "data");
  for (const auto& m : section(root, "datasets", empty).members) {
    std::string path = "datasets." + format_key(m.key);
    rc.datasets[m.key] = validate_params(m.value, data_schema(), registry, {path, ""}, path);
    // Cluster ids are read for the training set only ([data]); elsewhere the key would be
    // silently ignored.
    if (const Node* clusters = m.value.find("clusters"))
      fail(clusters->pos, path +
                              ".clusters: a clustering applies to the training set only "
                              "(set data.clusters)");
  }

  const Node& views = section(root, "views", empty);
  rc.views =
      validate_params(views, views_schema(), registry, {"views", ""}, "views", {"view1", "view2"});
  rc.view1 = validate_params(section(views, "view1", empty), view_override_schema(), registry,
                             {"views.view1", ""}, "views.view1");
  rc.view2 = validate_params(section(views, "view2", empty), view_override_schema(), registry,
                             {"views.view2", ""}, "views.view2");

  const Node* backbone = root.find("backbone");
  if (!backbone)
    fail(root.pos, root_name + " has no backbone: set backbone = { plugin = \"...\" } (" +
                       available(registry, Kind::Backbone) + ")");
  rc.backbone = validate_plugin(*backbone, Kind::Backbone, registry, "backbone");
  if (const Node* gate = root.find("gate"))
    rc.gate = validate_plugin(*gate, Kind::Gate, registry, "gate");

  const Node* losses = root.find("losses");
  if (!losses || (losses->is_array() && losses->items.empty()))
    fail(losses ? losses->pos : root.pos,
         root_name + " has no loss: set losses = [{ plugin = \"...\" }] (" +
             available(registry, Kind::Loss) + ")");
  rc.losses = plugin_list(*losses, Kind::Loss, registry, "losses");
  if (const Node* evaluators = root.find("evaluators"))
    rc.evaluators = plugin_list(*evaluators, Kind::Evaluator, registry, "evaluators");

  const Node& train = section(root, "train", empty);
  rc.train = validate_params(train, train_schema(), registry, {"train", ""}, "train");
  if (std::size_t n = rc.train.reals("betas").size(); n != 2) {
    const Node* betas = train.find("betas");
    fail(betas ? betas->pos : train.pos,
         "train.betas: expected two values (AdamW's beta1, beta2), got " + std::to_string(n));
  }
  rc.init =
      validate_params(section(root, "init", empty), init_schema(), registry, {"init", ""}, "init");
  rc.settings.run = run_settings(rc.run);
  rc.settings.data = data_settings(rc.data);
  for (const auto& [name, params] : rc.datasets) rc.settings.datasets[name] = data_settings(params);
  rc.settings.views = view_settings(rc.views);
  rc.settings.train = train_settings(rc.train);
  return rc;
}

}  // namespace wb::config
