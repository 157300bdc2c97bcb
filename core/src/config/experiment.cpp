#include "config/experiment.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "config/point_checks.h"
#include "config/tree.h"
#include "config/validate.h"
#include "workbench/params.h"  // toml_string
#include "workbench/registry.h"

namespace wb {

namespace {

using config::Assignment;
using config::fail;
using config::Node;
using config::Pos;

// [report] belongs to `workbench report` (report/settings.h): accepted here, read there.
const std::vector<std::string> kSections = {"experiment", "base",    "grid",   "zip",  "point",
                                            "exclude",    "profile", "report", "stage"};

// One axis of the product: a [grid] key, or the keys of a [zip.NAME] advancing together.
struct Axis {
  std::string origin;            // "[grid]" or "[zip.NAME]"
  std::vector<Assignment> keys;  // the keys (with their lists as values)
  std::size_t size() const { return keys.front().value.items.size(); }
};

using Candidate = std::vector<Assignment>;  // the assignments that make one point

std::string got(const Node& n) {
  return std::string("got ") + config::node_type_name(n) + " " + config::literal(n);
}

void check_sections(const Node& doc) {
  for (const auto& m : doc.members)
    if (std::find(kSections.begin(), kSections.end(), m.key) == kSections.end())
      fail(m.key_pos, "unknown section '" + m.key + "'" + config::did_you_mean(m.key, kSections) +
                          " (an experiment file has: " + config::join(kSections) + ")");
}

const Node* table_at(const Node& doc, const std::string& key) {
  const Node* n = doc.find(key);
  if (n && !n->is_table()) fail(n->pos, "[" + key + "] must be a table, " + got(*n));
  return n;
}

// The tables of an array of tables ([[point]], [[exclude]]).
std::vector<const Node*> tables_at(const Node& doc, const std::string& key) {
  std::vector<const Node*> out;
  const Node* n = doc.find(key);
  if (!n) return out;
  if (!n->is_array()) fail(n->pos, key + " must be written as [[" + key + "]] tables, " + got(*n));
  for (const auto& item : n->items) {
    if (!item.is_table()) fail(item.pos, "[[" + key + "]] entries must be tables, " + got(item));
    out.push_back(&item);
  }
  return out;
}

void no_seed(const Assignment& a, const std::string& where) {
  if (a.key == "seed")
    fail(a.key_pos, where + " cannot set 'seed': seeds come from [experiment].seeds");
}

bool safe_name(const std::string& name) {
  if (name.empty() || name.size() > 100 || name[0] == '.' || name[0] == '-') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

struct Header {
  std::string name;
  std::vector<std::int64_t> seeds;
  std::vector<Pos> seed_pos;
};

Header read_header(const Node& doc, const Node& base, const Registry& registry,
                   const std::string& file) {
  static const std::vector<ParamSpec> specs = {
      ParamSpec::optional("name", ParamType::String, "folder name of the experiment under runs/"),
      ParamSpec::optional("seeds", ParamType::IntList, "seeds every point is run with"),
      ParamSpec::text("description", "", "free text"),
  };
  const Node* exp = table_at(doc, "experiment");
  const Node table = exp ? *exp : Node::table(Pos{file, 0, 0});
  Params p = config::validate_params(table, specs, registry, {"[experiment]", ""}, "experiment");
  Header h;
  if (!p.has("name")) fail(table.pos, "[experiment] needs a name: it names the folder runs/<name>");
  h.name = p.text("name");
  if (!safe_name(h.name))
    fail(table.find("name")->pos, "[experiment].name '" + h.name +
                                      "' is not a safe folder name (letters, digits, '_', '-', "
                                      "'.'; not starting with '.' or '-')");
  if (const Node* seeds = table.find("seeds")) {
    if (seeds->items.empty()) fail(seeds->pos, "[experiment].seeds is empty");
    for (const auto& item : seeds->items) {
      if (std::find(h.seeds.begin(), h.seeds.end(), item.integer) != h.seeds.end())
        fail(item.pos, "[experiment].seeds lists " + std::to_string(item.integer) + " twice");
      h.seeds.push_back(item.integer);
      h.seed_pos.push_back(item.pos);
    }
  } else if (const Node* seed = base.find("seed")) {
    // Without [experiment].seeds, the base's own seed (maybe from --set) is the only one.
    if (seed->type != Node::Type::Int) fail(seed->pos, "seed: expected integer, " + got(*seed));
    h.seeds = {seed->integer};
    h.seed_pos = {seed->pos};
  } else {
    h.seeds = {0};
    h.seed_pos = {table.pos};
  }
  return h;
}

// A profile or --set key "stage.NAME.key" sets a key of [stage.NAME] (when the file has
// stages); any other key sets [base].
void assign_key(Node& base, Node* stages, const std::string& key, Node value, const Pos& where) {
  if (stages && key.rfind("stage.", 0) == 0)
    config::assign(*stages, key.substr(6), std::move(value), where);
  else
    config::assign(base, key, std::move(value), where);
}

void apply_profile(const Node& doc, const std::string& profile, Node& base, Node* stages) {
  const Node* profiles = table_at(doc, "profile");
  std::vector<std::string> names;
  if (profiles)
    for (const auto& m : profiles->members) names.push_back(m.key);
  if (profile.empty()) return;
  const Node* chosen = profiles ? profiles->find(profile) : nullptr;
  if (!chosen)
    fail(Pos{"--profile " + profile, 0, 0},
         "unknown profile '" + profile + "'" + config::did_you_mean(profile, names) +
             (names.empty() ? " (the file defines no [profile.NAME])"
                            : " (profiles: " + config::join(names) + ")"));
  if (!chosen->is_table())
    fail(chosen->pos, "[profile." + profile + "] must be a table, " + got(*chosen));
  for (auto& a : config::flatten(*chosen)) assign_key(base, stages, a.key, a.value, a.key_pos);
}

void apply_overrides(const std::vector<std::string>& overrides, Node& base, Node* stages) {
  for (const auto& o : overrides) {
    Pos where{"--set " + o, 0, 0};
    std::size_t eq = o.find('=');
    std::string key = eq == std::string::npos ? "" : o.substr(0, eq);
    key.erase(0, key.find_first_not_of(" \t"));
    key.erase(key.find_last_not_of(" \t") + 1);
    if (key.empty()) fail(where, "expected --set key=value, e.g. --set train.epochs=2");
    Node value = config::parse_value(o.substr(eq + 1), where.file);
    assign_key(base, stages, key, std::move(value), where);
  }
}

std::vector<Axis> read_axes(const Node& doc) {
  std::vector<Axis> axes;
  if (const Node* grid = table_at(doc, "grid")) {
    for (auto& a : config::flatten(*grid)) {
      no_seed(a, "[grid]");
      if (!a.value.is_array() || a.value.items.empty())
        fail(a.value.pos,
             "[grid] " + a.key + ": expected a non-empty list of values, " + got(a.value));
      axes.push_back(Axis{"[grid]", {a}});
    }
  }
  if (const Node* zips = table_at(doc, "zip")) {
    for (const auto& m : zips->members) {
      std::string origin = "[zip." + m.key + "]";
      if (!m.value.is_table())
        fail(m.value.pos, origin +
                              " must be a table of lists (write [zip.NAME] with key = [...]), " +
                              got(m.value));
      Axis axis{origin, config::flatten(m.value)};
      if (axis.keys.empty()) fail(m.value.pos, origin + " is empty");
      for (const auto& a : axis.keys) {
        no_seed(a, origin);
        if (!a.value.is_array() || a.value.items.empty())
          fail(a.value.pos,
               origin + " " + a.key + ": expected a non-empty list of values, " + got(a.value));
        const Assignment& first = axis.keys.front();
        if (a.value.items.size() != first.value.items.size())
          fail(a.value.pos, origin + ": '" + a.key + "' has " +
                                std::to_string(a.value.items.size()) + " values but '" + first.key +
                                "' has " + std::to_string(first.value.items.size()) +
                                "; the lists of a zip advance together and need equal lengths");
      }
      axes.push_back(std::move(axis));
    }
  }
  // A key varied by two axes would make one overwrite the other silently.
  std::map<std::string, std::string> owner;
  for (const auto& axis : axes)
    for (const auto& a : axis.keys) {
      auto [it, fresh] = owner.emplace(a.key, axis.origin);
      if (!fresh)
        fail(a.key_pos,
             "'" + a.key + "' is varied twice: in " + it->second + " and in " + axis.origin);
    }
  return axes;
}

// Refuses an experiment with more than kMaxExperimentPoints points, counted without building
// them (in double: a product of list lengths can overflow any integer).
void check_point_count(const std::vector<Axis>& axes, std::size_t explicit_points,
                       std::size_t seeds) {
  double grid = 1;
  std::string factors;
  for (const auto& axis : axes) {
    grid *= static_cast<double>(axis.size());
    factors += (factors.empty() ? "" : " x ") + std::to_string(axis.size()) + " (" +
               axis.keys.front().key + ")";
  }
  const double total = (grid + static_cast<double>(explicit_points)) * static_cast<double>(seeds);
  if (total <= static_cast<double>(kMaxExperimentPoints)) return;
  char count[32];
  std::snprintf(count, sizeof count, "%.4g", total);
  fail(axes.empty() ? Pos{} : axes.front().keys.front().key_pos,
       std::string("the experiment defines ") + count + " points (grid " + factors + ", " +
           std::to_string(explicit_points) + " [[point]], x " + std::to_string(seeds) +
           " seeds), more than the " + std::to_string(kMaxExperimentPoints) +
           " a run may have; split it into several files or shorten the lists");
}

// The grid product, first axis slowest.
std::vector<Candidate> product(const std::vector<Axis>& axes) {
  std::vector<Candidate> combos(1);
  for (const auto& axis : axes) {
    std::vector<Candidate> next;
    for (const auto& c : combos)
      for (std::size_t i = 0; i < axis.size(); ++i) {
        Candidate extended = c;
        for (const auto& key : axis.keys)
          extended.push_back(Assignment{key.key, key.key_pos, key.value.items[i]});
        next.push_back(std::move(extended));
      }
    combos = std::move(next);
  }
  return combos;
}

std::string label_of(const Candidate& c, std::int64_t seed) {
  std::string out;
  for (const auto& a : c) out += a.key + "=" + config::literal(a.value) + " ";
  return out + "seed=" + std::to_string(seed);
}

ConfigError in_point(const ConfigError& e, const std::string& label) {
  return ConfigError(e.file, e.line, e.column, e.message + " (in point " + label + ")");
}

// The resolved value at `key` as a literal, "" when absent.
std::string resolved_literal(const Node& resolved, const std::string& key) {
  try {
    const Node* n = config::lookup(resolved, key, Pos{});
    return n ? config::literal(*n) : "";
  } catch (const ConfigError&) {
    return "";  // ambiguous in this point: shown as absent
  }
}

Node resolved_tree(const Point& p) {
  return config::parse_toml(p.config.toml, p.id);
}

// The [[exclude]] tables, and which of their keys some point has (to catch typos).
class Excludes {
 public:
  explicit Excludes(const Node& doc) {
    for (const Node* t : tables_at(doc, "exclude")) {
      tables_.push_back(config::flatten(*t));
      if (tables_.back().empty()) fail(t->pos, "an empty [[exclude]] would drop every point");
      found_.emplace_back(tables_.back().size(), false);
    }
  }

  // Whether every key of some exclude table has its value in `cfg`. Values are compared as
  // written; a key left at its default is looked up in the resolved configuration, built
  // only when needed (an excluded point may well be invalid).
  bool match(const Node& cfg, const Registry& registry) {
    std::optional<Node> resolved;
    auto value_at = [&](const Assignment& x) -> const Node* {
      if (const Node* v = config::lookup(cfg, x.key, x.key_pos)) return v;
      if (!resolved) {
        try {
          resolved = config::parse_toml(
              canonical_toml(config::validate_run(cfg, registry, "[base]")), "<resolved>");
        } catch (const ConfigError&) {
          resolved = Node::table(Pos{});
        }
      }
      return config::lookup(*resolved, x.key, x.key_pos);
    };
    bool any = false;
    for (std::size_t e = 0; e < tables_.size(); ++e) {
      bool all = true;
      for (std::size_t k = 0; k < tables_[e].size(); ++k) {
        const Node* v = value_at(tables_[e][k]);
        if (v) found_[e][k] = true;
        all = all && v && config::same_value(tables_[e][k].value, *v);
      }
      any = any || all;
    }
    return any;
  }

  // An exclude key that no point has is a typo, not a filter that happens to match nothing.
  void check_keys_found() const {
    for (std::size_t e = 0; e < tables_.size(); ++e)
      for (std::size_t k = 0; k < tables_[e].size(); ++k)
        if (!found_[e][k])
          fail(tables_[e][k].key_pos,
               "[[exclude]] key '" + tables_[e][k].key + "' is not a key of any point");
  }

 private:
  std::vector<std::vector<Assignment>> tables_;
  std::vector<std::vector<bool>> found_;
};

// Base plus the candidate's assignments plus the seed; not validated yet.
Node point_tree(const Node& base, const Candidate& c, std::int64_t seed, const Pos& seed_pos,
                const std::string& label) {
  Node cfg = base;
  try {
    for (const auto& a : c) config::assign(cfg, a.key, a.value, a.value.pos);
  } catch (const ConfigError& e) {
    throw in_point(e, label);
  }
  config::assign(cfg, "seed", Node::int64(seed, seed_pos), seed_pos);
  return cfg;
}

// Validates the point against the schemas, then runs the plugins' own checks (and the
// device's) over the resolved values: an impossible point is refused here, before any runs.
Point make_point(const Node& cfg, const Candidate& c, std::int64_t seed, const std::string& label,
                 const Registry& registry, const ExperimentOptions& options) {
  Point point;
  point.seed = seed;
  point.label = label;
  for (const auto& a : c) point.assignments.emplace_back(a.key, config::literal(a.value));
  try {
    point.config = config::validate_run(cfg, registry, "[base]");
    config::check_point(cfg, point.config, registry, options.environment);
  } catch (const ConfigError& e) {
    throw in_point(e, label);
  }
  point.config.toml = canonical_toml(point.config);
  point.config.id = config_id(point.config);
  point.id = point.config.id;
  return point;
}

// The assigned keys whose resolved values are not the same in every point.
std::vector<std::string> varied_keys(const std::vector<Candidate>& candidates,
                                     const std::vector<Point>& points) {
  std::vector<std::string> keys, varied;
  for (const Candidate& c : candidates)
    for (const auto& a : c)
      if (std::find(keys.begin(), keys.end(), a.key) == keys.end()) keys.push_back(a.key);
  std::vector<Node> resolved;
  for (const auto& p : points) resolved.push_back(resolved_tree(p));
  for (const auto& key : keys) {
    std::set<std::string> values;
    for (const auto& r : resolved) values.insert(resolved_literal(r, key));
    if (values.size() > 1) varied.push_back(key);
  }
  return varied;
}

}  // namespace

namespace {

// Fills in a point's "@stage" references before it is validated; returns the ids it needs.
using Resolver =
    std::function<std::vector<std::string>(Node& cfg, const Candidate& c, std::int64_t seed)>;

struct Expansion {
  std::vector<Point> points;
  std::vector<std::string> varied;
  std::size_t grid_points = 1, explicit_points = 0, excluded = 0, duplicates = 0;
};

// The points of one set of [grid], [zip.*], [[point]], [[exclude]] tables (the file's, or a
// stage's) over `base`, for every seed. `ids` holds the ids already taken.
Expansion expand(const Node& tables, const Node& base, const Header& header,
                 const Registry& registry, std::set<std::string>& ids, const Resolver& resolve,
                 const ExperimentOptions& options) {
  Expansion x;
  const std::vector<Axis> axes = read_axes(tables);
  check_point_count(axes, tables_at(tables, "point").size(), header.seeds.size());
  std::vector<Candidate> candidates = product(axes);
  x.grid_points = candidates.size();
  for (const Node* t : tables_at(tables, "point")) {
    Candidate c = config::flatten(*t);
    for (const auto& a : c) no_seed(a, "[[point]]");
    candidates.push_back(std::move(c));
    ++x.explicit_points;
  }
  Excludes excludes(tables);
  for (std::size_t s = 0; s < header.seeds.size(); ++s) {
    for (const Candidate& c : candidates) {
      const std::string label = label_of(c, header.seeds[s]);
      Node cfg = point_tree(base, c, header.seeds[s], header.seed_pos[s], label);
      std::vector<std::string> needs;
      if (resolve) {
        try {
          needs = resolve(cfg, c, header.seeds[s]);
        } catch (const ConfigError& e) {
          throw in_point(e, label);
        }
      }
      if (excludes.match(cfg, registry)) {
        ++x.excluded;
        continue;
      }
      Point point = make_point(cfg, c, header.seeds[s], label, registry, options);
      point.needs = std::move(needs);
      if (!ids.insert(point.id).second) {
        ++x.duplicates;
        continue;
      }
      x.points.push_back(std::move(point));
    }
  }
  excludes.check_keys_found();
  x.varied = varied_keys(candidates, x.points);
  return x;
}

// ---- stages (docs/design.md, "Stages") ----

const std::vector<std::string> kStageKinds = {"train", "cluster", "deploy"};
const std::vector<std::string> kTrainStageKeys = {"kind", "after", "base",   "grid",
                                                  "zip",  "point", "exclude"};
const std::vector<std::string> kDeployStageKeys = {"kind", "after",     "from",
                                                   "data", "fold_gate", "evaluators"};

// `workbench cluster`'s options as stage keys (cli/verb_cluster.cpp; cluster/clustering.h).
const std::vector<ParamSpec>& cluster_stage_specs() {
  static const std::vector<ParamSpec> specs = {
      ParamSpec::integer("clusters", 256, "number of clusters m"),
      ParamSpec::integer("epochs", 10, "SGD epochs over the features"),
      ParamSpec::integer("batch", 256, "images per SGD step"),
      ParamSpec::real("lr", 0.1, "SGD learning rate"),
      ParamSpec::real("momentum", 0.9, "SGD momentum"),
      ParamSpec::real("weight_decay", 0.0, "SGD weight decay"),
      ParamSpec::integer("iterations", 3, "Sinkhorn-Knopp iterations"),
      ParamSpec::real("epsilon", 0.05, "Sinkhorn entropy weight"),
      ParamSpec::real("temperature", 0.1, "softmax temperature of the scores"),
      ParamSpec::text("assignment", "q", "final cluster: argmax of q or of scores"),
      ParamSpec::optional("seed", ParamType::Int, "initial centroids (default: the point's seed)"),
  };
  return specs;
}

struct Reference {
  std::string stage;
  Pos pos;
};

struct StageDef {
  std::string name, kind;
  const Node* table = nullptr;
  Pos pos;
  std::vector<Reference> deps;  // after = ... and every "@stage" reference
};

// Every string "@NAME" below `n`.
void collect_references(const Node& n, std::vector<Reference>& out) {
  if (n.is_string() && !n.text.empty() && n.text[0] == '@')
    out.push_back({n.text.substr(1), n.pos});
  for (const auto& item : n.items) collect_references(item, out);
  for (const auto& m : n.members) collect_references(m.value, out);
}

std::string hex_id(const std::string& text) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a64(text)));
  return std::string(hex, 12);
}

std::vector<StageDef> read_stages(const Node& stages, const Node& base) {
  std::vector<StageDef> defs;
  for (const auto& m : stages.members) {
    StageDef d;
    d.name = m.key;
    d.pos = m.key_pos;
    if (!safe_name(d.name))
      fail(m.key_pos, "[stage." + d.name + "]: not a stage name (letters, digits, '_', '-', '.')");
    if (!m.value.is_table())
      fail(m.value.pos, "[stage." + d.name + "] must be a table, " + got(m.value));
    d.table = &m.value;
    d.kind = "train";
    if (const Node* kind = m.value.find("kind")) {
      if (!kind->is_string() ||
          std::find(kStageKinds.begin(), kStageKinds.end(), kind->text) == kStageKinds.end())
        fail(kind->pos, "[stage." + d.name + "].kind: expected one of " +
                            config::join(kStageKinds) + ", " + got(*kind));
      d.kind = kind->text;
    }
    std::vector<std::string> keys = d.kind == "train" ? kTrainStageKeys
                                    : d.kind == "deploy"
                                        ? kDeployStageKeys
                                        : std::vector<std::string>{"kind", "after", "from"};
    if (d.kind == "cluster")
      for (const auto& spec : cluster_stage_specs()) keys.push_back(spec.name);
    for (const auto& k : m.value.members)
      if (std::find(keys.begin(), keys.end(), k.key) == keys.end())
        fail(k.key_pos, "[stage." + d.name + "]: unknown key '" + k.key + "'" +
                            config::did_you_mean(k.key, keys) + " (a " + d.kind +
                            " stage has: " + config::join(keys) + ")");
    if (const Node* after = m.value.find("after")) {
      std::vector<const Node*> names;
      if (after->is_string()) names.push_back(after);
      for (const auto& item : after->items) names.push_back(&item);
      for (const Node* n : names)
        if (!n->is_string())
          fail(n->pos,
               "[stage." + d.name + "].after: expected a stage name or a list of them, " + got(*n));
      if (!after->is_string() && !after->is_array())
        fail(after->pos, "[stage." + d.name + "].after: expected a stage name or a list of them, " +
                             got(*after));
      for (const Node* n : names) d.deps.push_back({n->text, n->pos});
    }
    if (d.kind == "train") {
      collect_references(base, d.deps);
      for (const char* key : {"base", "grid", "zip", "point"})
        if (const Node* n = m.value.find(key)) collect_references(*n, d.deps);
    } else {
      const Node* from = m.value.find("from");
      if (!from)
        fail(m.key_pos, "[stage." + d.name + "]: a " + d.kind +
                            " stage needs from = \"@STAGE\", the stage whose points it takes");
      if (!from->is_string() || from->text.size() < 2 || from->text[0] != '@')
        fail(from->pos, "[stage." + d.name + "].from: expected \"@STAGE\", " + got(*from));
      collect_references(*from, d.deps);
    }
    defs.push_back(std::move(d));
  }
  if (defs.empty()) fail(stages.pos, "[stage] defines no stage (write [stage.NAME] tables)");
  return defs;
}

// The stages in the order they run: each after the stages it depends on, otherwise in file
// order. An unknown stage or a cycle is refused at the reference.
std::vector<const StageDef*> stage_order(const std::vector<StageDef>& defs) {
  std::map<std::string, const StageDef*> by_name;
  std::vector<std::string> names;
  for (const auto& d : defs) {
    by_name[d.name] = &d;
    names.push_back(d.name);
  }
  for (const auto& d : defs)
    for (const auto& r : d.deps)
      if (!by_name.count(r.stage))
        fail(r.pos, "[stage." + d.name + "] refers to unknown stage '" + r.stage + "'" +
                        config::did_you_mean(r.stage, names) + " (stages: " + config::join(names) +
                        ")");
  std::vector<const StageDef*> order;
  std::set<std::string> placed;
  while (order.size() < defs.size()) {
    const StageDef* next = nullptr;
    for (const auto& d : defs) {
      if (placed.count(d.name)) continue;
      if (std::all_of(d.deps.begin(), d.deps.end(),
                      [&](const Reference& r) { return placed.count(r.stage) > 0; })) {
        next = &d;
        break;
      }
    }
    if (!next) {
      // Follow unplaced dependencies from the first unplaced stage until one repeats.
      const StageDef* at = nullptr;
      for (const auto& d : defs)
        if (!placed.count(d.name)) {
          at = &d;
          break;
        }
      std::vector<std::string> path;
      std::vector<const Reference*> edges;
      while (std::find(path.begin(), path.end(), at->name) == path.end()) {
        path.push_back(at->name);
        const Reference* edge = nullptr;
        for (const auto& r : at->deps)
          if (!placed.count(r.stage)) {
            edge = &r;
            break;
          }
        edges.push_back(edge);
        at = by_name.at(edge->stage);
      }
      const std::size_t first =
          static_cast<std::size_t>(std::find(path.begin(), path.end(), at->name) - path.begin());
      std::string cycle;
      for (std::size_t i = first; i < path.size(); ++i) cycle += path[i] + " -> ";
      fail(edges[first]->pos, "the stages depend on each other in a cycle: " + cycle + at->name +
                                  " (a stage can only use stages that run before it)");
    }
    order.push_back(next);
    placed.insert(next->name);
  }
  return order;
}

// The point of `stage` that a point (seed, assignments) refers to: the same seed, and the same
// value of every key both points assign.
const Point& referenced_point(const std::vector<Point>& candidates, const std::string& stage,
                              std::int64_t seed,
                              const std::vector<std::pair<std::string, std::string>>& assigned,
                              const Pos& where) {
  std::vector<const Point*> found;
  for (const Point& p : candidates) {
    if (p.seed != seed) continue;
    bool same = true;
    for (const auto& [key, value] : assigned)
      for (const auto& [k, v] : p.assignments)
        if (k == key && v != value) same = false;
    if (same) found.push_back(&p);
  }
  std::string which = "seed " + std::to_string(seed);
  for (const auto& [key, value] : assigned) which += ", " + key + " = " + value;
  if (found.empty())
    fail(where, "'@" + stage + "': no point of stage " + stage + " has " + which +
                    " (a reference takes the point with the same seed and the same values of "
                    "the keys both stages vary)");
  if (found.size() > 1) {
    std::string ids;
    for (const Point* p : found) ids += (ids.empty() ? "" : ", ") + p->id + " (" + p->label + ")";
    fail(where, "'@" + stage + "' is ambiguous: " + std::to_string(found.size()) +
                    " points of stage " + stage + " have " + which + ": " + ids +
                    "; vary the keys that tell them apart in this stage too");
  }
  return *found.front();
}

std::string point_dir(const ExperimentOptions& options, const std::string& experiment,
                      const std::string& id) {
  std::string root = options.runs_dir.empty() ? "runs" : options.runs_dir;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  return root + "/" + experiment + "/" + id;
}

// Replaces every "@STAGE" string below `n` by the referenced point's run directory.
void resolve_references(Node& n, const std::map<std::string, std::vector<Point>>& done,
                        std::int64_t seed,
                        const std::vector<std::pair<std::string, std::string>>& assigned,
                        const std::function<std::string(const std::string&)>& dir_of,
                        std::vector<std::string>& needs) {
  if (n.is_string() && !n.text.empty() && n.text[0] == '@') {
    const std::string stage = n.text.substr(1);
    const Point& p = referenced_point(done.at(stage), stage, seed, assigned, n.pos);
    n.text = dir_of(p.id);
    if (std::find(needs.begin(), needs.end(), p.id) == needs.end()) needs.push_back(p.id);
  }
  for (auto& item : n.items) resolve_references(item, done, seed, assigned, dir_of, needs);
  for (auto& m : n.members) resolve_references(m.value, done, seed, assigned, dir_of, needs);
}

// A cluster or deploy stage: one point per point of its `from` stage.
std::vector<Point> derived_points(const StageDef& d, const std::vector<Point>& sources,
                                  const std::function<std::string(const std::string&)>& dir_of,
                                  const Registry& registry) {
  std::vector<Point> out;
  const Node& t = *d.table;
  Node options = Node::table(t.pos);
  for (const auto& m : t.members)
    if (m.key != "kind" && m.key != "after" && m.key != "from")
      options.set(m.key, m.value, m.key_pos);
  for (const Point& src : sources) {
    std::string task = "# workbench _stage: what this point runs\nkind = " + toml_string(d.kind) +
                       "\nstage = " + toml_string(d.name) +
                       "\nsource = " + toml_string(dir_of(src.id)) + "\n";
    if (d.kind == "cluster") {
      const Params p = config::validate_params(options, cluster_stage_specs(), registry,
                                               {"stage." + d.name, ""}, "cluster stage");
      for (const auto& spec : cluster_stage_specs()) {
        if (spec.name == "seed") {
          task += "seed = " + std::to_string(p.has("seed") ? p.integer("seed") : src.seed) + "\n";
        } else if (spec.type == ParamType::Int) {
          task += spec.name + " = " + std::to_string(p.integer(spec.name)) + "\n";
        } else if (spec.type == ParamType::Float) {
          task += spec.name + " = " + config::format_real(p.real(spec.name)) + "\n";
        } else {
          task += spec.name + " = " + toml_string(p.text(spec.name)) + "\n";
        }
      }
      const std::string& a = p.text("assignment");
      if (a != "q" && a != "scores")
        fail(options.find("assignment")->pos,
             "[stage." + d.name + "].assignment: expected \"q\" or \"scores\", got \"" + a + "\"");
    } else {  // deploy
      const Node* data = t.find("data");
      if (!data || !data->is_string() || data->text.empty())
        fail(data ? data->pos : d.pos,
             "[stage." + d.name +
                 "]: a deploy stage needs data = \"NAME\", a [datasets.NAME] of its source");
      // The evaluators are checked as the deployed run will hold them: the source's
      // configuration (its [datasets]) with this list as its evaluators.
      Node cfg = config::parse_toml(src.config.toml, src.id);
      const Node* datasets = cfg.find("datasets");
      if (!datasets || !datasets->find(data->text))
        fail(data->pos, "[stage." + d.name + "].data: '" + data->text + "' is not a [datasets." +
                            data->text + "] of stage " + src.stage + "'s points");
      bool fold = true;
      if (const Node* f = t.find("fold_gate")) {
        if (f->type != Node::Type::Bool)
          fail(f->pos, "[stage." + d.name + "].fold_gate: expected true or false, " + got(*f));
        fold = f->boolean;
      }
      task += "data = " + toml_string(data->text) + "\nfold_gate = " + (fold ? "true" : "false") +
              "\nevaluators = [";
      if (const Node* e = t.find("evaluators")) {
        if (!e->is_array())
          fail(e->pos, "[stage." + d.name + "].evaluators: expected [[stage." + d.name +
                           ".evaluators]] tables, " + got(*e));
        cfg.set("evaluators", *e, e->pos);
        try {
          config::validate_run(cfg, registry, "[stage." + d.name + "]");
        } catch (const ConfigError& err) {
          throw ConfigError(err.file, err.line, err.column,
                            err.message + " (in stage " + d.name + ")");
        }
        for (const auto& item : e->items) task += "\n  " + toml_string(config::literal(item)) + ",";
      }
      task += "\n]\n";
    }
    Point p;
    p.stage = d.name;
    p.kind = d.kind;
    p.task = task;
    p.id = hex_id(task);
    p.seed = src.seed;
    p.assignments = src.assignments;
    p.label = d.name + ": " + src.label.substr(src.label.find(": ") + 2) + " (of " + src.id + ")";
    p.needs = {src.id};
    out.push_back(std::move(p));
  }
  return out;
}

void expand_stages(const Node& doc, const Node& stages, const Node& base, const Header& header,
                   const Registry& registry, const ExperimentOptions& options, Experiment& exp) {
  for (const char* key : {"grid", "zip", "point", "exclude"})
    if (const config::Member* m = doc.member(key))
      fail(m->key_pos, "[" + std::string(key) +
                           "] with [stage.*]: a stage varies its own keys ([stage.NAME." + key +
                           "])");
  const std::vector<StageDef> defs = read_stages(stages, base);
  const auto dir_of = [&](const std::string& id) { return point_dir(options, exp.name, id); };
  std::map<std::string, std::vector<Point>> done;  // the points of every stage expanded so far
  std::map<std::string, std::string> stage_of;     // id -> stage
  std::set<std::string> ids;
  for (const StageDef* d : stage_order(defs)) {
    Stage stage{d->name, d->kind, {}, {}};
    for (const auto& r : d->deps)
      if (std::find(stage.after.begin(), stage.after.end(), r.stage) == stage.after.end())
        stage.after.push_back(r.stage);
    std::vector<Point> points;
    if (d->kind == "train") {
      Node stage_base = base;
      if (const Node* b = d->table->find("base")) {
        if (!b->is_table())
          fail(b->pos, "[stage." + d->name + ".base] must be a table, " + got(*b));
        for (auto& a : config::flatten(*b)) config::assign(stage_base, a.key, a.value, a.key_pos);
      }
      const Resolver resolve = [&](Node& cfg, const Candidate& c, std::int64_t seed) {
        std::vector<std::pair<std::string, std::string>> assigned;
        for (const auto& a : c) assigned.emplace_back(a.key, config::literal(a.value));
        std::vector<std::string> needs;
        resolve_references(cfg, done, seed, assigned, dir_of, needs);
        return needs;
      };
      std::set<std::string> own;
      Expansion x = expand(*d->table, stage_base, header, registry, own, resolve, options);
      for (auto& p : x.points) {
        if (ids.count(p.id))
          fail(d->pos, "[stage." + d->name + "]: point " + p.label +
                           " has the configuration of stage " + stage_of[p.id] + "'s point " +
                           p.id + "; a stage must differ from the others");
        p.stage = d->name;
        p.label = d->name + ": " + p.label;
      }
      points = std::move(x.points);
      stage.varied = std::move(x.varied);
      exp.excluded += x.excluded;
      exp.duplicates += x.duplicates;
    } else {
      const std::string from = d->table->find("from")->text.substr(1);
      points = derived_points(*d, done.at(from), dir_of, registry);
    }
    for (const auto& p : points) {
      ids.insert(p.id);
      stage_of[p.id] = d->name;
    }
    done[d->name] = points;
    exp.points.insert(exp.points.end(), points.begin(), points.end());
    exp.stages.push_back(std::move(stage));
  }
}

}  // namespace

namespace {

// Expands the file under each [profile.*] but the one in use; an error names the profile.
void check_other_profiles(const Node& doc, const std::string& text, const std::string& file,
                          const Registry& registry, const ExperimentOptions& options) {
  const Node* profiles = doc.find("profile");
  if (!profiles) return;
  for (const auto& m : profiles->members) {
    if (m.key == options.profile) continue;
    ExperimentOptions o = options;
    o.profile = m.key;
    o.check_profiles = false;
    try {
      parse_experiment(text, file, registry, o);
    } catch (const ConfigError& e) {
      throw ConfigError(e.file, e.line, e.column,
                        e.message + " (with [profile." + m.key +
                            "] applied: every profile is checked, used or not)");
    }
  }
}

}  // namespace

Experiment parse_experiment(const std::string& text, const std::string& file,
                            const Registry& registry, const ExperimentOptions& options) {
  const Node doc = config::parse_toml(text, file);
  check_sections(doc);
  const Node* base_table = table_at(doc, "base");
  Node base = base_table ? *base_table : Node::table(Pos{file, 0, 0});
  const Node* stage_table = table_at(doc, "stage");
  std::optional<Node> stages;
  if (stage_table) stages = *stage_table;
  apply_profile(doc, options.profile, base, stages ? &*stages : nullptr);
  apply_overrides(options.overrides, base, stages ? &*stages : nullptr);
  const Header header = read_header(doc, base, registry, file);

  Experiment exp;
  exp.name = header.name;
  exp.file = file;
  exp.source = text;
  exp.seeds = header.seeds;

  if (stages) {
    expand_stages(doc, *stages, base, header, registry, options, exp);
  } else {
    std::set<std::string> ids;
    Expansion x = expand(doc, base, header, registry, ids, nullptr, options);
    exp.points = std::move(x.points);
    exp.varied = std::move(x.varied);
    exp.grid_points = x.grid_points;
    exp.explicit_points = x.explicit_points;
    exp.excluded = x.excluded;
    exp.duplicates = x.duplicates;
  }
  if (options.check_profiles) check_other_profiles(doc, text, file, registry, options);
  return exp;
}

Experiment load_experiment(const std::string& file, const Registry& registry,
                           const ExperimentOptions& options) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ConfigError(file, 0, 0, "cannot read the experiment file");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_experiment(text.str(), file, registry, options);
}

namespace {
std::string plural(std::size_t n, const std::string& word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

// Plain strings without their quotes; other values as TOML literals; "-" when absent.
std::string cell(const std::string& literal) {
  if (literal.empty()) return "-";
  if (literal.size() >= 2 && literal.front() == '"' && literal.find('\\') == std::string::npos)
    return literal.substr(1, literal.size() - 2);
  return literal;
}
}  // namespace

void keep_only_point(Experiment& experiment, const std::string& id) {
  std::vector<Point> matches;
  for (const auto& p : experiment.points)
    if (p.id.rfind(id, 0) == 0) matches.push_back(p);
  if (matches.size() != 1) {
    std::string ids;
    for (const auto& p : experiment.points) ids += (ids.empty() ? "" : ", ") + p.id;
    throw std::runtime_error("--only " + id + ": " +
                             (matches.empty() ? "no point has this id" : "several points match") +
                             " (ids: " + ids + ")");
  }
  experiment.points = std::move(matches);
}

void keep_shard(Experiment& experiment, const std::string& shard) {
  const std::size_t slash = shard.find('/');
  std::size_t used_i = 0, used_n = 0;
  long i = -1, n = 0;
  try {
    if (slash != std::string::npos) {
      i = std::stol(shard.substr(0, slash), &used_i);
      n = std::stol(shard.substr(slash + 1), &used_n);
    }
  } catch (const std::exception&) {
    n = 0;
  }
  if (slash == std::string::npos || used_i != slash || used_n != shard.size() - slash - 1 ||
      n < 1 || i < 0 || i >= n)
    throw std::runtime_error("--shard " + shard + ": expected I/N with 0 <= I < N (e.g. 0/4)");
  std::vector<Point> kept;
  for (std::size_t k = 0; k < experiment.points.size(); ++k)
    if (static_cast<long>(k % static_cast<std::size_t>(n)) == i)
      kept.push_back(experiment.points[k]);
  experiment.points = std::move(kept);
}

namespace {

// One aligned table: id, seed, then the given columns.
std::string aligned(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(rows.front().size(), 0);
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i)
      line += row[i] + (i + 1 < row.size() ? std::string(width[i] - row[i].size() + 2, ' ') : "");
    out += line + "\n";
  }
  return out;
}

std::vector<std::vector<std::string>> point_rows(const std::vector<const Point*>& points,
                                                 const std::vector<std::string>& varied) {
  std::vector<std::string> header = {"id", "seed"};
  header.insert(header.end(), varied.begin(), varied.end());
  std::vector<std::vector<std::string>> rows = {header};
  for (const Point* p : points) {
    Node resolved = resolved_tree(*p);
    std::vector<std::string> row = {p->id, std::to_string(p->seed)};
    for (const auto& key : varied) row.push_back(cell(resolved_literal(resolved, key)));
    rows.push_back(std::move(row));
  }
  return rows;
}

// --dry-run of a file with stages: every stage in the order it runs, what it depends on, and
// its points with the earlier points they use.
std::string format_stages(const Experiment& exp) {
  std::string out;
  for (const Stage& stage : exp.stages) {
    std::vector<const Point*> points;
    for (const auto& p : exp.points)
      if (p.stage == stage.name) points.push_back(&p);
    out += "stage " + stage.name + " (" + stage.kind + (stage.after.empty() ? "" : ", after ") +
           config::join(stage.after) + "): " + plural(points.size(), "point") + "\n";
    std::vector<std::vector<std::string>> rows;
    if (stage.kind == "train") {
      rows = point_rows(points, stage.varied);
    } else {
      rows = {{"id", "seed", "label"}};
      for (const Point* p : points) rows.push_back({p->id, std::to_string(p->seed), p->label});
    }
    const bool any_needs =
        std::any_of(points.begin(), points.end(), [](const Point* p) { return !p->needs.empty(); });
    if (any_needs) {
      rows[0].push_back("uses");
      for (std::size_t i = 0; i < points.size(); ++i)
        rows[i + 1].push_back(config::join(points[i]->needs));
    }
    std::string table = aligned(rows);
    for (std::size_t at = 0; at < table.size();) {  // indented under its stage
      out += "  ";
      const std::size_t nl = table.find('\n', at);
      out += table.substr(at, nl + 1 - at);
      at = nl + 1;
    }
  }
  out += plural(exp.points.size(), "point") + " in " + plural(exp.stages.size(), "stage") + " (x " +
         plural(exp.seeds.size(), "seed") + "), " + std::to_string(exp.excluded) + " excluded";
  if (exp.duplicates) out += ", " + std::to_string(exp.duplicates) + " duplicates dropped";
  return out + "\n";
}

}  // namespace

std::string format_points_table(const Experiment& exp) {
  if (!exp.stages.empty()) return format_stages(exp);
  std::vector<const Point*> points;
  for (const auto& p : exp.points) points.push_back(&p);
  std::string out = aligned(point_rows(points, exp.varied));
  std::string sources = exp.explicit_points == 0
                            ? std::to_string(exp.grid_points) + " grid"
                            : "(" + std::to_string(exp.grid_points) + " grid + " +
                                  std::to_string(exp.explicit_points) + " explicit)";
  out += plural(exp.points.size(), "point") + " (" + sources + " x " +
         plural(exp.seeds.size(), "seed") + "), " + std::to_string(exp.excluded) + " excluded";
  if (exp.duplicates) out += ", " + std::to_string(exp.duplicates) + " duplicates dropped";
  return out + "\n";
}

}  // namespace wb
