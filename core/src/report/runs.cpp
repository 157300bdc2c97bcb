#include "report/runs.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <stdexcept>

#include "config/tree.h"
#include "store/atomic_file.h"
#include "store/run_dir.h"

namespace wb {

namespace fs = std::filesystem;

namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The series the plots use; the rest of metrics.h5 is not read.
bool plotted_series(const std::string& name) {
  return name == "train/loss" || starts_with(name, "loss/") ||
         (starts_with(name, "routing/moe") &&
          (ends_with(name, "/load_entropy") || ends_with(name, "/expert_load")));
}

void read_metrics(PointRun& p) {
  const fs::path file = p.dir / "metrics.h5";
  if (!fs::exists(file)) {
    // A clustering stage's point (stage.toml, docs/design.md "Stages") measures nothing.
    if (!fs::exists(p.dir / "stage.toml")) p.problem = "no metrics.h5";
    return;
  }
  try {
    const MetricsReader reader(file);
    for (const auto& [evaluator, metrics] : reader.eval())
      for (const auto& [metric, values] : metrics) {
        const auto shape = reader.eval_shape(evaluator, metric);
        const std::string name = evaluator + "/" + metric;
        if (shape.empty() && values.size() == 1)
          p.scalars[name] = values[0];
        else if (shape.size() == 1)
          p.vectors[name] = values;
      }
    for (const auto& name : reader.series_names()) {
      if (!plotted_series(name)) continue;
      Series s = reader.series(name);
      if (ends_with(name, "/expert_load") && !s.steps.empty()) {  // only the final load is shown
        const auto width = static_cast<std::size_t>(s.width);
        s.steps.erase(s.steps.begin(), s.steps.end() - 1);
        s.values.erase(s.values.begin(), s.values.end() - static_cast<std::ptrdiff_t>(width));
      }
      p.curves[name] = std::move(s);
    }
  } catch (const std::exception& e) {
    p.scalars.clear();
    p.vectors.clear();
    p.curves.clear();
    p.problem = e.what();
  }
}

std::vector<fs::path> find_images(const fs::path& eval_dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(eval_dir, ec)) return out;
  for (fs::recursive_directory_iterator it(eval_dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    std::string ext = it->path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (ext == ".png") out.push_back(it->path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

PointRun read_point(const fs::path& dir) {
  PointRun p;
  p.dir = dir;
  p.id = dir.filename().string();
  const RunPaths paths(dir);
  try {
    const PointFile f = read_point_file(paths.point);
    if (!f.id.empty()) p.id = f.id;
    p.label = f.label;
    p.seed = f.seed;
    for (const auto& a : f.assignments)
      if (a.first != "seed") p.assignments.push_back(a);
    p.point_file_read = true;
  } catch (const std::exception& e) {
    p.problem = e.what();
  }
  try {
    p.status = read_status(paths.status);
  } catch (const std::exception& e) {
    if (p.problem.empty()) p.problem = e.what();
  }
  if (p.status.state == RunState::Done && p.problem.empty()) read_metrics(p);
  p.images = find_images(paths.eval);
  return p;
}

using Key = std::vector<std::pair<std::string, std::string>>;

Key group_key(const PointRun& p) {
  Key key = p.assignments;  // the same assignments in another order are the same group
  std::sort(key.begin(), key.end());
  return key;
}

bool same_value(const std::string& a, const std::string& b) {
  double x = 0, y = 0;
  if (numeric_value(a, x) && numeric_value(b, y)) return x == y;
  return a == b;
}

std::shared_ptr<const config::Node> read_config(const fs::path& file) {
  try {
    if (!fs::exists(file)) return nullptr;
    return std::make_shared<const config::Node>(config::parse_toml(read_file(file), file.string()));
  } catch (const std::exception&) {
    return nullptr;  // only used to fill in values of keys the group does not assign
  }
}

}  // namespace

bool numeric_value(const std::string& literal, double& out) {
  if (literal.empty()) return false;
  try {
    const config::Node n = config::parse_value(literal, "");
    if (n.type == config::Node::Type::Int) {
      out = static_cast<double>(n.integer);
      return true;
    }
    if (n.type == config::Node::Type::Float) {
      out = n.real;
      return true;
    }
  } catch (const std::exception&) {
  }
  return false;
}

std::string display_value(const std::string& literal) {
  if (literal.empty()) return literal;
  try {
    const config::Node n = config::parse_value(literal, "");
    if (n.is_string()) return n.text;
    if (n.is_table() && n.members.size() == 1 && n.members[0].key == "plugin" &&
        n.members[0].value.is_string())
      return n.members[0].value.text;
  } catch (const std::exception&) {
  }
  return literal;
}

bool value_less(const std::string& a, const std::string& b) {
  double x = 0, y = 0;
  const bool nx = numeric_value(a, x), ny = numeric_value(b, y);
  if (nx && ny) return x < y;
  if (nx != ny) return nx;  // numbers before text
  return display_value(a) < display_value(b);
}

std::string Group::value(const std::string& key) const {
  for (const auto& [k, literal] : assignments)
    if (k == key) return literal;
  if (!config) return "";
  try {
    if (const config::Node* n = config::lookup(*config, key, config::Pos{})) {
      // A plugin table the group did not set shows as its plugin: every default of a resolved
      // configuration would bury the one thing that tells the rows apart.
      if (n->is_table())
        if (const config::Node* plugin = n->find("plugin"); plugin && plugin->is_string())
          return "{ plugin = " + config::literal(*plugin) + " }";
      return config::literal(*n);
    }
  } catch (const std::exception&) {
  }
  return "";
}

std::size_t Group::done() const {
  return static_cast<std::size_t>(
      std::count_if(points.begin(), points.end(), [](const PointRun& p) { return p.done(); }));
}

std::size_t Group::failed() const {
  return static_cast<std::size_t>(std::count_if(
      points.begin(), points.end(),
      [](const PointRun& p) { return p.status.state == RunState::Failed || !p.problem.empty(); }));
}

std::size_t ExperimentRuns::point_count() const {
  std::size_t n = 0;
  for (const auto& g : groups) n += g.points.size();
  return n;
}

std::string ExperimentRuns::display_name(const std::string& column) const {
  const auto it = settings.names.find(column);
  return it == settings.names.end() ? column : it->second;
}

std::string ExperimentRuns::group_label(const Group& group) const {
  std::string out;
  for (const auto& key : varied) {
    const std::string v = group.value(key);
    out +=
        (out.empty() ? "" : ", ") + display_name(key) + "=" + (v.empty() ? "?" : display_value(v));
  }
  return out.empty() ? "all points" : out;
}

PointCounts count_points(const ExperimentRuns& runs) {
  PointCounts c;
  for (const auto& g : runs.groups) {
    c.total += g.points.size();
    c.done += g.done();
    c.failed += g.failed();
  }
  c.total += runs.unreadable.size();
  c.failed += runs.unreadable.size();
  c.unfinished = c.total - c.done - c.failed;
  return c;
}

std::string counts_sentence(const ExperimentRuns& runs) {
  const PointCounts c = count_points(runs);
  const auto counted = [](std::size_t n, const std::string& word) {
    return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
  };
  return counted(c.total, "point") + " in " + counted(runs.groups.size(), "configuration") + "; " +
         std::to_string(c.done) + " done, " + std::to_string(c.failed) + " failed, " +
         std::to_string(c.unfinished) + " not finished.";
}

std::vector<const PointRun*> unfinished_points(const ExperimentRuns& runs) {
  std::vector<const PointRun*> out;
  for (const auto& g : runs.groups)
    for (const auto& p : g.points)
      if (!p.done()) out.push_back(&p);
  for (const auto& p : runs.unreadable) out.push_back(&p);
  return out;
}

std::string point_problem(const PointRun& p) {
  const RunStatus& s = p.status;
  std::string text = state_name(s.state);
  if (s.state == RunState::Failed)
    text += ": " + (s.error.empty() ? std::string("no reason recorded") : s.error);
  else if (s.state == RunState::Running && s.total_steps > 0)
    text += " (step " + std::to_string(s.step) + " of " + std::to_string(s.total_steps) + ")";
  if (!p.problem.empty()) text += (s.state == RunState::Done ? ", but " : "; ") + p.problem;
  return text;
}

namespace {

// Drops the point directories that the experiment file, as last run, no longer defines (an
// edited grid, another --profile), and says which.
void leave_out_earlier_points(const fs::path& dir, std::vector<fs::path>& point_dirs,
                              std::vector<std::string>& warnings) {
  const auto current = read_current_point_ids(dir);
  if (!current) return;
  const std::set<std::string> ids(current->begin(), current->end());
  std::vector<std::string> left_out;
  point_dirs.erase(std::remove_if(point_dirs.begin(), point_dirs.end(),
                                  [&](const fs::path& d) {
                                    if (ids.count(d.filename().string())) return false;
                                    left_out.push_back(d.filename().string());
                                    return true;
                                  }),
                   point_dirs.end());
  if (left_out.empty()) return;
  std::string list;
  for (const auto& id : left_out) list += (list.empty() ? "" : ", ") + id;
  warnings.push_back(std::to_string(left_out.size()) + " point director" +
                     (left_out.size() == 1 ? "y" : "ies") +
                     " left out: the experiment file as last run (points.toml) no longer defines "
                     "them (" +
                     list + ")");
}

}  // namespace

ExperimentRuns load_experiment_runs(const fs::path& dir) {
  ExperimentRuns runs;
  runs.dir = dir;
  if (!fs::is_directory(dir))
    throw std::runtime_error(dir.string() + ": not a directory (expected runs/<experiment>)");
  const fs::path copy = dir / "experiment.toml";
  if (fs::exists(copy)) {
    const ExperimentHeader header = parse_experiment_header(read_file(copy), copy.string());
    runs.name = header.name;
    runs.settings = header.report;
  } else {
    runs.warnings.push_back(copy.string() + " is missing: no [report] settings");
  }
  if (runs.name.empty()) runs.name = fs::absolute(dir).lexically_normal().filename().string();
  if (runs.name.empty())
    runs.name = fs::absolute(dir).lexically_normal().parent_path().filename().string();

  std::vector<fs::path> point_dirs;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_directory() && fs::exists(entry.path() / "point.toml"))
      point_dirs.push_back(entry.path());
  std::sort(point_dirs.begin(), point_dirs.end());
  const bool any = !point_dirs.empty();
  leave_out_earlier_points(dir, point_dirs, runs.warnings);
  if (any && point_dirs.empty())
    throw std::runtime_error(dir.string() +
                             ": none of its point directories is a point of the "
                             "experiment file as last run (points.toml): run the file first");
  if (point_dirs.empty())
    throw std::runtime_error(dir.string() +
                             ": no points found (expected <id>/point.toml directories, as "
                             "'workbench run' writes them)");

  std::map<Key, std::size_t> index;  // group key -> position in runs.groups
  for (const auto& d : point_dirs) {
    PointRun p = read_point(d);
    if (!p.point_file_read) {
      runs.unreadable.push_back(std::move(p));  // its assignments are unknown
      continue;
    }
    for (const auto& a : p.assignments)
      if (std::find(runs.keys.begin(), runs.keys.end(), a.first) == runs.keys.end())
        runs.keys.push_back(a.first);
    const Key key = group_key(p);
    auto [it, added] = index.emplace(key, runs.groups.size());
    if (added) {
      runs.groups.emplace_back();
      runs.groups.back().assignments = p.assignments;
    }
    Group& g = runs.groups[it->second];
    if (!g.config) g.config = read_config(d / "config.toml");
    g.points.push_back(std::move(p));
  }

  if (runs.groups.empty()) return runs;
  for (const auto& key : runs.keys) {
    // Evaluator settings a point changes (evaluators.knn.views) measure, they do not train:
    // their results are the metric columns, not a key of the row.
    if (key == "evaluators" || key.rfind("evaluators.", 0) == 0) continue;
    const std::string first = runs.groups.front().value(key);
    const bool varies = std::any_of(runs.groups.begin(), runs.groups.end(), [&](const Group& g) {
      return !same_value(g.value(key), first);
    });
    if (varies) runs.varied.push_back(key);
  }
  for (auto& g : runs.groups)
    std::sort(g.points.begin(), g.points.end(), [](const PointRun& a, const PointRun& b) {
      return a.seed != b.seed ? a.seed < b.seed : a.id < b.id;
    });
  std::stable_sort(runs.groups.begin(), runs.groups.end(), [&](const Group& a, const Group& b) {
    for (const auto& key : runs.varied) {
      const std::string x = a.value(key), y = b.value(key);
      if (value_less(x, y)) return true;
      if (value_less(y, x)) return false;
    }
    return false;
  });
  return runs;
}

}  // namespace wb
