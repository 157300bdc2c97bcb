#include "config/experiment.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "config/point_checks.h"
#include "config/tree.h"
#include "config/validate.h"
#include "workbench/registry.h"

namespace wb {

namespace {

using config::Assignment;
using config::fail;
using config::Node;
using config::Pos;

// [report] belongs to `workbench report` (report/settings.h): accepted here, read there.
const std::vector<std::string> kSections = {"experiment", "base",    "grid",    "zip",
                                            "point",      "exclude", "profile", "report"};

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

void apply_profile(const Node& doc, const std::string& profile, Node& base) {
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
  for (auto& a : config::flatten(*chosen)) config::assign(base, a.key, a.value, a.key_pos);
}

void apply_overrides(const std::vector<std::string>& overrides, Node& base) {
  for (const auto& o : overrides) {
    Pos where{"--set " + o, 0, 0};
    std::size_t eq = o.find('=');
    std::string key = eq == std::string::npos ? "" : o.substr(0, eq);
    key.erase(0, key.find_first_not_of(" \t"));
    key.erase(key.find_last_not_of(" \t") + 1);
    if (key.empty()) fail(where, "expected --set key=value, e.g. --set train.epochs=2");
    Node value = config::parse_value(o.substr(eq + 1), where.file);
    config::assign(base, key, std::move(value), where);
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
  apply_profile(doc, options.profile, base);
  apply_overrides(options.overrides, base);
  const Header header = read_header(doc, base, registry, file);

  Experiment exp;
  exp.name = header.name;
  exp.file = file;
  exp.source = text;
  exp.seeds = header.seeds;

  const std::vector<Axis> axes = read_axes(doc);
  check_point_count(axes, tables_at(doc, "point").size(), header.seeds.size());
  std::vector<Candidate> candidates = product(axes);
  exp.grid_points = candidates.size();
  for (const Node* t : tables_at(doc, "point")) {
    Candidate c = config::flatten(*t);
    for (const auto& a : c) no_seed(a, "[[point]]");
    candidates.push_back(std::move(c));
    ++exp.explicit_points;
  }
  Excludes excludes(doc);

  std::set<std::string> ids;
  for (std::size_t s = 0; s < header.seeds.size(); ++s) {
    for (const Candidate& c : candidates) {
      const std::string label = label_of(c, header.seeds[s]);
      const Node cfg = point_tree(base, c, header.seeds[s], header.seed_pos[s], label);
      if (excludes.match(cfg, registry)) {
        ++exp.excluded;
        continue;
      }
      Point point = make_point(cfg, c, header.seeds[s], label, registry, options);
      if (!ids.insert(point.id).second) {
        ++exp.duplicates;
        continue;
      }
      exp.points.push_back(std::move(point));
    }
  }
  excludes.check_keys_found();
  exp.varied = varied_keys(candidates, exp.points);
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

std::string format_points_table(const Experiment& exp) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header = {"id", "seed"};
  header.insert(header.end(), exp.varied.begin(), exp.varied.end());
  rows.push_back(header);
  for (const auto& p : exp.points) {
    Node resolved = resolved_tree(p);
    std::vector<std::string> row = {p.id, std::to_string(p.seed)};
    for (const auto& key : exp.varied) row.push_back(cell(resolved_literal(resolved, key)));
    rows.push_back(std::move(row));
  }
  std::vector<std::size_t> width(header.size(), 0);
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i)
      line += row[i] + (i + 1 < row.size() ? std::string(width[i] - row[i].size() + 2, ' ') : "");
    out += line + "\n";
  }
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
