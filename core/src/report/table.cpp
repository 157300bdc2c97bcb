#include "report/table.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

#include "report/html.h"  // html_escape

namespace wb {

namespace {

const char* const kMissing = "—";

std::string fixed(double v, int precision) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", precision, v);
  return text;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// The experiment of a row matches `experiment = "name"` in a baseline table.
bool matches_baseline(const ExperimentRuns& exp, const Group& group,
                      const std::vector<std::pair<std::string, std::string>>& baseline) {
  for (const auto& [key, literal] : baseline) {
    if (key == "experiment") {
      if (display_value(literal) != exp.name) return false;
      continue;
    }
    const std::string value = group.value(key);
    double x = 0, y = 0;
    if (numeric_value(value, x) && numeric_value(literal, y)
            ? x != y
            : display_value(value) != display_value(literal))
      return false;
  }
  return true;
}

std::string seeds_text(const TableRow& row) {
  std::string s = std::to_string(row.done) + "/" + std::to_string(row.total);
  if (row.failed > 0) s += ", " + std::to_string(row.failed) + " failed";
  return s;
}

std::string key_text(const std::string& literal) {
  return literal.empty() ? kMissing : display_value(literal);
}

std::string cell_text(const Table& t, const Cell& c) {
  std::string s = format_stat(c.stat, t.precision, t.show_n);
  if (c.delta)
    s += std::string(" (") + (*c.delta >= 0 ? "+" : "") + fixed(*c.delta, t.precision) + ")";
  return s;
}

std::string md_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += '\\';
    out += c == '\n' ? ' ' : c;
  }
  return out;
}

std::string csv_field(const std::string& s) {
  const bool quote = s.find_first_of(",\"\n\r") != std::string::npos ||
                     (!s.empty() && (s.front() == ' ' || s.back() == ' '));
  if (!quote) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string join(const std::set<std::string>& items) {
  std::string s;
  for (const auto& i : items) s += (s.empty() ? "" : ", ") + i;
  return s;
}

// The shortest %g text that reads back as exactly v ("20", "0.7000000000000001").
std::string csv_number(double v) {
  if (!std::isfinite(v)) return "";
  const bool plain = v == 0 || (std::fabs(v) >= 1e-5 && std::fabs(v) < 1e15);
  char text[64];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(text, sizeof text, "%.*g", digits, v);
    // More digits also avoid the exponent where %g would use it needlessly ("2e+01").
    if (std::strtod(text, nullptr) == v && !(plain && std::strchr(text, 'e'))) break;
  }
  return text;
}

// The header cells shared by the Markdown and HTML tables.
std::vector<std::string> header(const Table& t) {
  std::vector<std::string> h;
  if (t.with_experiment) h.push_back(t.display_name("experiment"));
  for (const auto& k : t.keys) h.push_back(t.display_name(k));
  for (const auto& m : t.metrics) h.push_back(t.display_name(m));
  h.push_back(t.display_name("seeds"));
  h.push_back(t.display_name("time"));
  return h;
}

// The body cells of a row; `best` tells which are best metric cells.
std::vector<std::string> body(const Table& t, const TableRow& r, std::vector<bool>& best) {
  std::vector<std::string> cells;
  best.clear();
  if (t.with_experiment) cells.push_back(r.experiment), best.push_back(false);
  for (const auto& k : r.keys) cells.push_back(key_text(k)), best.push_back(false);
  for (const auto& c : r.cells) cells.push_back(cell_text(t, c)), best.push_back(c.best);
  cells.push_back(seeds_text(r)), best.push_back(false);
  cells.push_back(format_seconds(r.seconds.mean)), best.push_back(false);
  return cells;
}

}  // namespace

bool lower_is_better(const std::string& metric) {
  const std::string m = lower(metric);
  return m.find("loss") != std::string::npos || m.find("error") != std::string::npos ||
         m.find("cv2") != std::string::npos;
}

bool ranked_metric(const std::string& metric) {
  std::string leaf = lower(metric.substr(metric.rfind('/') + 1));
  const std::size_t view = leaf.rfind("_view");
  if (view != std::string::npos && view + 5 < leaf.size() &&
      std::all_of(leaf.begin() + static_cast<long>(view) + 5, leaf.end(),
                  [](unsigned char c) { return std::isdigit(c) != 0; }))
    leaf.erase(view);
  auto ends_with = [&](const std::string& tail) {
    return leaf.size() >= tail.size() &&
           leaf.compare(leaf.size() - tail.size(), tail.size(), tail) == 0;
  };
  static const std::set<std::string> settings = {"lr",       "lr_at_edge", "labelled",
                                                 "finetune", "moe_layers", "images"};
  if (settings.count(leaf) || leaf.rfind("lr_", 0) == 0 || ends_with("_lr") || ends_with("_std"))
    return false;
  return leaf.find("corresponding") == std::string::npos;
}

std::string Table::display_name(const std::string& column) const {
  const auto it = names.find(column);
  return it == names.end() ? column : it->second;
}

std::string format_stat(const MeanStd& stat, int precision, bool show_n) {
  if (stat.n == 0) return kMissing;
  std::string s = fixed(stat.mean, precision);
  if (stat.n > 1) s += " ± " + fixed(stat.std, precision + 1);
  if (show_n) s += " (n=" + std::to_string(stat.n) + ")";
  return s;
}

std::string format_seconds(double seconds) {
  if (!std::isfinite(seconds)) return kMissing;
  if (seconds < 60) return fixed(seconds, 1) + " s";
  if (seconds < 3600) return fixed(seconds / 60, 1) + " min";
  return fixed(seconds / 3600, 2) + " h";
}

Table build_table(const std::vector<const ExperimentRuns*>& experiments,
                  const ReportSettings& settings, std::vector<std::string>& warnings) {
  Table t;
  t.with_experiment = experiments.size() > 1;
  t.names = settings.names;
  t.precision = settings.precision.value_or(3);
  std::string names;
  for (const auto* e : experiments) names += (names.empty() ? "" : ", ") + e->name;
  t.title = !settings.title.empty()
                ? settings.title
                : (t.with_experiment ? "Comparison: " + names : "Experiment " + names);

  std::set<std::string> found;
  for (const auto* e : experiments) {
    for (const auto& k : e->varied)
      if (std::find(t.keys.begin(), t.keys.end(), k) == t.keys.end()) t.keys.push_back(k);
    for (const auto& g : e->groups)
      for (const auto& p : g.points)
        for (const auto& s : p.scalars) found.insert(s.first);
  }
  if (settings.columns.empty()) {
    t.metrics.assign(found.begin(), found.end());
  } else {
    t.metrics = settings.columns;
    for (const auto& c : settings.columns)
      if (!found.count(c))
        warnings.push_back("[report].columns: no point has the metric '" + c + "' (found: " +
                           (found.empty() ? std::string("none") : join(found)) + ")");
  }
  for (const auto& m : t.metrics) {
    t.lower_better.push_back(lower_is_better(m));
    t.ranked.push_back(ranked_metric(m));
  }

  std::vector<std::size_t> baseline_rows;
  for (const auto* e : experiments) {
    for (const auto& g : e->groups) {
      TableRow row;
      row.experiment = e->name;
      row.label = (t.with_experiment ? e->name + ": " : "") + e->group_label(g);
      for (const auto& k : t.keys) row.keys.push_back(g.value(k));
      for (const auto& m : t.metrics) {
        std::vector<double> values;
        for (const auto& p : g.points)
          if (auto it = p.scalars.find(m); it != p.scalars.end()) values.push_back(it->second);
        row.cells.push_back({mean_std(values), false, std::nullopt});
      }
      std::vector<double> seconds;
      for (const auto& p : g.points)
        if (p.done()) seconds.push_back(p.status.elapsed_seconds);
      row.seconds = mean_std(seconds);
      row.total = g.points.size();
      row.done = g.done();
      row.failed = g.failed();
      if (!settings.baseline.empty() && matches_baseline(*e, g, settings.baseline))
        baseline_rows.push_back(t.rows.size());
      t.rows.push_back(std::move(row));
    }
  }

  std::set<std::size_t> ns;
  for (const auto& r : t.rows)
    for (const auto& c : r.cells)
      if (c.stat.n > 0) ns.insert(c.stat.n);
  t.show_n = ns.size() > 1;

  // A best value needs a comparison: a ranked column with values in two rows or more.
  for (std::size_t m = 0; m < t.metrics.size(); ++m) {
    std::optional<double> best;
    std::size_t rows_with_values = 0;
    for (const auto& r : t.rows) {
      const double v = r.cells[m].stat.mean;
      if (r.cells[m].stat.n == 0) continue;
      ++rows_with_values;
      if (!best || (t.lower_better[m] ? v < *best : v > *best)) best = v;
    }
    if (!t.ranked[m] || rows_with_values < 2) continue;
    for (auto& r : t.rows)
      r.cells[m].best = best && r.cells[m].stat.n > 0 && r.cells[m].stat.mean == *best;
  }

  if (!settings.baseline.empty()) {
    std::string wanted;
    for (const auto& [k, v] : settings.baseline)
      wanted += (wanted.empty() ? "" : ", ") + k + "=" + v;
    if (baseline_rows.size() != 1) {
      warnings.push_back("[report].baseline { " + wanted + " } matches " +
                         std::to_string(baseline_rows.size()) +
                         " rows, not one: no differences shown");
    } else {
      TableRow& base = t.rows[baseline_rows[0]];
      base.baseline = true;
      t.baseline = base.label;
      for (auto& r : t.rows) {
        if (&r == &base) continue;
        for (std::size_t m = 0; m < t.metrics.size(); ++m)
          if (r.cells[m].stat.n > 0 && base.cells[m].stat.n > 0)
            r.cells[m].delta = r.cells[m].stat.mean - base.cells[m].stat.mean;
      }
    }
  }
  return t;
}

std::string markdown_table(const Table& t) {
  std::string out;
  const auto h = header(t);
  out += "|";
  for (const auto& c : h) out += " " + md_escape(c) + " |";
  out += "\n|";
  const std::size_t first_metric = (t.with_experiment ? 1 : 0) + t.keys.size();
  for (std::size_t i = 0; i < h.size(); ++i)
    out += i >= first_metric ? "---:|" : "---|";  // numbers right-aligned
  out += "\n";
  std::vector<bool> best;
  for (const auto& r : t.rows) {
    out += "|";
    const auto cells = body(t, r, best);
    for (std::size_t i = 0; i < cells.size(); ++i)
      out += " " + (best[i] ? "**" + md_escape(cells[i]) + "**" : md_escape(cells[i])) + " |";
    out += "\n";
  }
  return out;
}

std::string html_table(const Table& t) {
  std::string out = "<table class=\"report\">\n<thead><tr>";
  const std::size_t first_metric = (t.with_experiment ? 1 : 0) + t.keys.size();
  const auto h = header(t);
  for (std::size_t i = 0; i < h.size(); ++i) {
    std::string tip;  // the column's id, and the direction of metric columns
    if (t.with_experiment && i == 0)
      tip = "experiment";
    else if (i < first_metric)
      tip = t.keys[i - (t.with_experiment ? 1 : 0)];
    else if (i < first_metric + t.metrics.size())
      tip = t.metrics[i - first_metric] + (!t.ranked[i - first_metric] ? " (not ranked)"
                                           : t.lower_better[i - first_metric]
                                               ? " (lower is better)"
                                               : " (higher is better)");
    out += "<th" + std::string(i >= first_metric ? " class=\"num\"" : "") + " title=\"" +
           html_escape(tip) + "\">" + html_escape(h[i]) + "</th>";
  }
  out += "</tr></thead>\n<tbody>\n";
  std::vector<bool> best;
  for (const auto& r : t.rows) {
    out += r.baseline ? "<tr class=\"baseline\">" : "<tr>";
    const auto cells = body(t, r, best);
    for (std::size_t i = 0; i < cells.size(); ++i) {
      const std::string text = html_escape(cells[i]);
      out += std::string(i >= first_metric ? "<td class=\"num\">" : "<td>") +
             (best[i] ? "<b>" + text + "</b>" : text) + "</td>";
    }
    out += "</tr>\n";
  }
  return out + "</tbody>\n</table>\n";
}

std::string csv_table(const Table& t) {
  std::vector<std::string> h;
  if (t.with_experiment) h.push_back("experiment");
  for (const auto& k : t.keys) h.push_back(k);
  for (const auto& m : t.metrics) {
    for (const char* part : {".mean", ".std", ".n", ".best"}) h.push_back(m + part);
    if (!t.baseline.empty()) h.push_back(m + ".delta");
  }
  for (const char* c : {"seeds_done", "seeds_total", "seeds_failed", "seconds_mean"})
    h.push_back(c);
  if (!t.baseline.empty()) h.push_back("baseline");

  auto line = [](const std::vector<std::string>& fields) {
    std::string s;
    for (std::size_t i = 0; i < fields.size(); ++i) s += (i ? "," : "") + csv_field(fields[i]);
    return s + "\n";
  };
  std::string out = line(h);
  for (const auto& r : t.rows) {
    std::vector<std::string> f;
    if (t.with_experiment) f.push_back(r.experiment);
    for (const auto& k : r.keys) f.push_back(display_value(k));
    for (const auto& c : r.cells) {
      f.push_back(c.stat.n > 0 ? csv_number(c.stat.mean) : "");
      f.push_back(c.stat.n > 1 ? csv_number(c.stat.std) : "");
      f.push_back(std::to_string(c.stat.n));
      f.push_back(c.best ? "1" : "0");
      if (!t.baseline.empty()) f.push_back(c.delta ? csv_number(*c.delta) : "");
    }
    f.push_back(std::to_string(r.done));
    f.push_back(std::to_string(r.total));
    f.push_back(std::to_string(r.failed));
    f.push_back(r.seconds.n > 0 ? csv_number(r.seconds.mean) : "");
    if (!t.baseline.empty()) f.push_back(r.baseline ? "1" : "0");
    out += line(f);
  }
  return out;
}

std::string table_notes(const Table& t) {
  std::string s =
      "Values: mean ± sample standard deviation (n − 1) over the seeds of a row; a single value "
      "is one seed; — means no value.";
  if (t.show_n) s += " (n=k): the number of seeds with that metric, which differs between rows.";
  std::vector<std::string> low, unranked;
  for (std::size_t m = 0; m < t.metrics.size(); ++m) {
    if (!t.ranked[m])
      unranked.push_back(t.display_name(t.metrics[m]));
    else if (t.lower_better[m])
      low.push_back(t.display_name(t.metrics[m]));
  }
  auto list = [](const std::vector<std::string>& names) {
    std::string out;
    for (std::size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
    return out;
  };
  if (t.rows.size() > 1 && unranked.size() < t.metrics.size()) {
    s += " Bold: the best mean of its column (higher is better";
    if (!low.empty()) s += "; lower for " + list(low);
    s += ").";
    if (!unranked.empty()) {
      const std::string names = list(unranked);
      s += " Columns without a best value: " + names + (names.back() == '.' ? "" : ".");
    }
  }
  if (!t.baseline.empty())
    s += " In parentheses: the difference of the mean from the baseline row (" + t.baseline + ").";
  s += " Seeds: done / points (failed). Time: mean wall time of a done point.";
  return s;
}

}  // namespace wb
