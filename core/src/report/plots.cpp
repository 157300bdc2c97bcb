#include "report/plots.h"

#include "report/consistency.h"
#include "report/html.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <set>

#include "workbench/format.h"

namespace wb {

namespace {

namespace fs = std::filesystem;

// Legends right of the plot: below it, gnuplot 5.4 lets them run into the x label.
const char* const kKey = "set key outside right top vertical\n";

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

std::vector<const PointRun*> done_points(const Group& g) {
  std::vector<const PointRun*> out;
  for (const auto& p : g.points)
    if (p.done()) out.push_back(&p);
  return out;
}

MeanStd metric_stat(const Group& g, const std::string& metric) {
  std::vector<double> values;
  for (const auto& p : g.points)
    if (auto it = p.scalars.find(metric); it != p.scalars.end()) values.push_back(it->second);
  return mean_std(values);
}

// Error bars of one seed are zero rather than missing, so the point is still drawn.
double bar(const MeanStd& s) {
  return std::isfinite(s.std) ? s.std : 0.0;
}

// Data blocks for gnuplot's `index`: separated by two blank lines.
struct Blocks {
  std::string data;
  int count = 0;
  int add(const std::string& comment, const std::string& rows) {
    data += (count ? "\n\n" : "") + std::string("# ") + comment + "\n" + rows;
    return count++;
  }
};

std::vector<LabelledGroup> labelled(const ExperimentRuns& e, const std::string& prefix = "") {
  std::vector<LabelledGroup> out;
  for (const auto& g : e.groups) out.push_back({prefix + e.group_label(g), &g});
  return out;
}

// (a) each metric against each numeric varied key; one line per value of the other keys.
void metric_plots(const ExperimentRuns& e, const Table& table, Plotter& plotter,
                  FigureSection& section) {
  for (const auto& key : e.varied) {
    const bool numeric = std::all_of(e.groups.begin(), e.groups.end(), [&](const Group& g) {
      double x = 0;
      return numeric_value(g.value(key), x);
    });
    if (!numeric) continue;
    std::vector<std::string> others;
    for (const auto& k : e.varied)
      if (k != key) others.push_back(k);
    for (const auto& metric : table.metrics) {
      std::vector<std::pair<std::string, std::vector<std::pair<double, MeanStd>>>> lines;
      double lo = INFINITY, hi = -INFINITY, lowest_positive = INFINITY;
      for (const auto& g : e.groups) {
        const MeanStd s = metric_stat(g, metric);
        if (s.n == 0) continue;
        std::string label;
        for (const auto& o : others)
          label +=
              (label.empty() ? "" : ", ") + table.display_name(o) + "=" + display_value(g.value(o));
        if (label.empty()) label = table.display_name(metric);
        auto line = std::find_if(lines.begin(), lines.end(),
                                 [&](const auto& l) { return l.first == label; });
        if (line == lines.end()) line = lines.insert(lines.end(), {label, {}});
        double x = 0;
        numeric_value(g.value(key), x);
        line->second.push_back({x, s});
        lo = std::min(lo, x);
        hi = std::max(hi, x);
        if (x > 0) lowest_positive = std::min(lowest_positive, x);
      }
      if (lines.empty() || !(lo < hi)) continue;  // one value of the key: nothing to compare
      // A line needs two values of the key: [[point]] rows that change several keys at once
      // (Table 2) leave one point per line, and no plot.
      lines.erase(std::remove_if(lines.begin(), lines.end(),
                                 [](const auto& line) { return line.second.size() < 2; }),
                  lines.end());
      if (lines.empty()) continue;
      if (lines.size() == 1) lines.front().first = table.display_name(metric);  // nothing to tell
      std::size_t longest = 0;
      for (const auto& line : lines) longest = std::max(longest, line.first.size());
      // Values spanning a factor of 20 or more go on a log axis; a 0 among them (w_G = 0: the
      // loss switched off) sits one decade below the smallest positive value, labelled "0".
      const bool log_x = lo >= 0 && lowest_positive < INFINITY && hi / lowest_positive >= 20;
      const double zero_at = lowest_positive / 10;
      if (log_x && lo == 0)
        for (auto& line : lines)
          for (auto& point : line.second)
            if (point.first == 0) point.first = zero_at;
      Blocks blocks;
      std::string plot;
      for (auto& [label, points] : lines) {
        std::sort(points.begin(), points.end(),
                  [](const auto& a, const auto& b) { return a.first < b.first; });
        std::string rows;
        for (const auto& [x, s] : points)
          rows += gp_number(x) + " " + gp_number(s.mean) + " " + gp_number(bar(s)) + " " +
                  std::to_string(s.n) + "\n";
        const int i = blocks.add(label, rows);
        plot += std::string(plot.empty() ? "plot " : ", \\\n     ") + "DATA index " +
                std::to_string(i) + " using 1:2:3 with yerrorlines lw 2 pt 7 lc " +
                std::to_string(i + 1) + " title " + gp_string(label);
      }
      const std::string m = table.display_name(metric), k = table.display_name(key);
      std::string script = "set title " + gp_string(m + " vs " + k + " (mean ± std over seeds)") +
                           "\nset xlabel " + gp_string(k) + "\nset ylabel " + gp_string(m) + "\n" +
                           // Long labels go below: on the right they squeeze the plot.
                           (longest > 30 ? std::string("set key outside below left vertical\n")
                                         : std::string(kKey)) +
                           "set offsets graph 0.05, graph 0.05, graph 0.1, graph 0.1\n";
      if (log_x) script += "set logscale x\nset format x '%g'\n";  // 0.001, not 0.00100
      if (log_x && lo == 0) script += "set xtics add ('0' " + gp_number(zero_at) + ")\n";
      script += plot + "\n";
      if (auto f = plotter.plot("metric_" + metric + "_vs_" + key, blocks.data, script,
                                m + " against " + k + ": mean ± sample std over seeds"))
        section.figures.push_back(*f);
    }
  }
}

// A series of one MoE layer: "loss/ogar/cls_moe1" (a name ending in _moe<digits>).
bool per_layer_series(const std::string& name) {
  const std::size_t at = name.rfind("_moe");
  return at != std::string::npos && at + 4 < name.size() &&
         std::all_of(name.begin() + static_cast<long>(at) + 4, name.end(),
                     [](unsigned char c) { return std::isdigit(c) != 0; });
}

enum class Curves { TrainLoss, Totals, PerLayer };

bool wanted(const std::string& name, Curves which) {
  switch (which) {
    case Curves::TrainLoss:
      return name == "train/loss";
    case Curves::Totals:
      return name == "train/loss" || (starts_with(name, "loss/") && !per_layer_series(name));
    case Curves::PerLayer:
      return starts_with(name, "loss/") && per_layer_series(name);
  }
  return false;
}

// (b) one plot per training series of the kind asked for, one line (with a ±std band) per group.
void curve_plots(const std::vector<LabelledGroup>& groups, const std::string& prefix, Curves which,
                 Plotter& plotter, FigureSection& section) {
  std::set<std::string> names;
  for (const auto& lg : groups)
    for (const PointRun* p : done_points(*lg.group))
      for (const auto& [name, s] : p->curves)
        if (wanted(name, which)) names.insert(name);
  std::vector<std::string> order(names.begin(), names.end());
  std::stable_partition(order.begin(), order.end(),
                        [](const auto& n) { return n == "train/loss"; });
  for (const auto& name : order) {
    Blocks blocks;
    std::string plot;
    for (const auto& lg : groups) {
      std::vector<const Series*> series;
      for (const PointRun* p : done_points(*lg.group))
        if (auto it = p->curves.find(name); it != p->curves.end()) series.push_back(&it->second);
      const MeanCurve c = mean_curve(series);
      if (c.steps.empty()) continue;
      std::string rows;
      for (std::size_t i = 0; i < c.steps.size(); ++i)
        rows += std::to_string(c.steps[i]) + " " + gp_number(c.values[i].mean) + " " +
                gp_number(bar(c.values[i])) + "\n";
      const int i = blocks.add(lg.label, rows);
      const std::string lc = " lc " + std::to_string(i + 1);
      plot += std::string(plot.empty() ? "plot " : ", \\\n     ") + "DATA index " +
              std::to_string(i) +
              " using 1:($2-$3):($2+$3) with filledcurves fs transparent solid 0.15" + lc +
              " notitle, \\\n     DATA index " + std::to_string(i) + " using 1:2 with lines lw 2" +
              lc + " title " + gp_string(lg.label);
    }
    if (blocks.count == 0) continue;
    const std::string script = "set title " + gp_string(name + " (mean over seeds, band ±std)") +
                               "\nset xlabel 'step'\nset ylabel " + gp_string(name) + "\n" + kKey +
                               plot + "\n";
    if (auto f = plotter.plot(prefix + "curve_" + name, blocks.data, script,
                              name + " over training steps, averaged over seeds"))
      section.figures.push_back(*f);
  }
}

// MoE layer indices that have a series "routing/moe<i>/<leaf>" in some done point.
std::set<int> routing_layers(const std::vector<LabelledGroup>& groups, const std::string& leaf) {
  std::set<int> layers;
  for (const auto& lg : groups)
    for (const PointRun* p : done_points(*lg.group))
      for (const auto& [name, s] : p->curves) {
        const std::string head = "routing/moe", tail = "/" + leaf;
        if (!starts_with(name, head) || name.size() <= head.size() + tail.size() ||
            name.compare(name.size() - tail.size(), tail.size(), tail) != 0)
          continue;
        const std::string digits =
            name.substr(head.size(), name.size() - head.size() - tail.size());
        if (!digits.empty() && std::all_of(digits.begin(), digits.end(),
                                           [](unsigned char ch) { return std::isdigit(ch) != 0; }))
          layers.insert(std::stoi(digits));
      }
  return layers;
}

// (c) load entropy per layer over steps.
void entropy_plots(const std::vector<LabelledGroup>& groups, Plotter& plotter,
                   FigureSection& section) {
  for (int layer : routing_layers(groups, "load_entropy")) {
    const std::string prefix = "routing/moe" + std::to_string(layer) + "/";
    Blocks blocks;
    std::string plot;
    std::int64_t experts = 0;
    for (const auto& lg : groups) {
      std::vector<const Series*> series;
      for (const PointRun* p : done_points(*lg.group)) {
        if (auto it = p->curves.find(prefix + "load_entropy"); it != p->curves.end())
          series.push_back(&it->second);
        if (auto it = p->curves.find(prefix + "expert_load"); it != p->curves.end())
          experts = std::max(experts, it->second.width);
      }
      const MeanCurve c = mean_curve(series);
      if (c.steps.empty()) continue;
      std::string rows;
      for (std::size_t i = 0; i < c.steps.size(); ++i)
        rows += std::to_string(c.steps[i]) + " " + gp_number(c.values[i].mean) + "\n";
      const int i = blocks.add(lg.label, rows);
      plot += std::string(plot.empty() ? "plot " : ", \\\n     ") + "DATA index " +
              std::to_string(i) + " using 1:2 with lines lw 2 lc " + std::to_string(i + 1) +
              " title " + gp_string(lg.label);
    }
    if (blocks.count == 0) continue;
    if (experts > 1)
      plot += ", \\\n     log(" + std::to_string(experts) +
              ") with lines dt 2 lw 1 lc 'gray40' title 'balanced: log E'";
    const std::string script =
        "set title " +
        gp_string("MoE layer " + std::to_string(layer) +
                  ": entropy of the expert load (falls when routing collapses)") +
        "\nset xlabel 'step'\nset ylabel 'load entropy (nats)'\nset yrange [0:*]\n" + kKey + plot +
        "\n";
    if (auto f = plotter.plot(
            "routing_entropy_moe" + std::to_string(layer), blocks.data, script,
            "MoE layer " + std::to_string(layer) + ": load entropy over steps, mean over seeds"))
      section.figures.push_back(*f);
  }
}

// (c') the final expert load of each group as a layer x expert map.
void load_maps(const std::vector<LabelledGroup>& groups, Plotter& plotter, FigureSection& section) {
  const std::set<int> layer_set = routing_layers(groups, "expert_load");
  const std::vector<int> layers(layer_set.begin(), layer_set.end());
  for (const auto& lg : groups) {
    // rows: layers; columns: experts; the final load averaged over seeds
    std::vector<std::vector<double>> rows;
    std::size_t experts = 0;
    bool any = false;
    for (int layer : layers) {
      std::vector<const Series*> series;
      for (const PointRun* p : done_points(*lg.group))
        if (auto it = p->curves.find("routing/moe" + std::to_string(layer) + "/expert_load");
            it != p->curves.end() && !it->second.steps.empty())
          series.push_back(&it->second);
      std::vector<double> row;
      std::int64_t width = 0;
      for (const Series* s : series) width = std::max(width, s->width);
      for (std::int64_t e = 0; e < width; ++e) {
        std::vector<double> finals;
        for (const Series* s : series)
          if (e < s->width)
            finals.push_back(s->values[(s->steps.size() - 1) * static_cast<std::size_t>(s->width) +
                                       static_cast<std::size_t>(e)]);
        row.push_back(mean_std(finals).mean);
      }
      any = any || !row.empty();
      experts = std::max(experts, row.size());
      rows.push_back(std::move(row));
    }
    if (!any) continue;
    std::string data = "# rows: MoE layers";
    for (int l : layers) data += " " + std::to_string(l);
    data += "; columns: experts; final expert load, mean over seeds\n";
    for (const auto& row : rows) {
      for (std::size_t e = 0; e < experts; ++e)
        data += (e ? " " : "") + gp_number(e < row.size() ? row[e] : NAN);
      data += "\n";
    }
    std::string ytics;
    for (std::size_t i = 0; i < layers.size(); ++i)
      ytics += (i ? ", " : "") + gp_string(std::to_string(layers[i])) + " " + std::to_string(i);
    const std::string script =
        "set title " + gp_string("final expert load: " + lg.label) +
        "\nset xlabel 'expert'\nset ylabel 'MoE layer'\nset cblabel 'fraction of tokens'" +
        "\nunset grid\nset tics out\nset palette defined (0 'white', 0.5 '#fdae61', 1 '#d7191c')" +
        "\nset rmargin 14\nset cbrange [0:*]\nset xrange [-0.5:" + std::to_string(experts) +
        "-0.5]" + "\nset yrange [-0.5:" + std::to_string(layers.size()) + "-0.5]" +
        "\nset ytics (" + ytics + ")\n" + (experts <= 32 ? "set xtics 1\n" : "") +
        "plot DATA matrix with image notitle\n";
    const int height = static_cast<int>(std::min<std::size_t>(900, 180 + 45 * layers.size()));
    if (auto f = plotter.plot("routing_load_" + lg.label, data, script,
                              "final expert load per MoE layer (layer x expert): " + lg.label, 640,
                              height))
      section.figures.push_back(*f);
  }
}

// `text` broken into lines of at most about `width` characters after ", ".
std::string wrap(const std::string& text, std::size_t width) {
  std::string out, line;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find(", ", start);
    const std::string piece =
        text.substr(start, end == std::string::npos ? std::string::npos : end + 2 - start);
    if (!line.empty() && line.size() + piece.size() > width) {
      while (line.back() == ' ') line.pop_back();
      out += line + "\n";
      line.clear();
    }
    line += piece;
    if (end == std::string::npos) break;
    start = end + 2;
  }
  out += line;
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// A gnuplot double-quoted string: its "\n" breaks the line (titles of several lines).
std::string gp_lines(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '\n')
      out += "\\n";
    else if (c == '"' || c == '\\')
      out += std::string("\\") + c;
    else
      out += c;
  }
  return out + "\"";
}

// (d) CR-MoE Fig. 3 as the paper draws it: one row of panels per group, CLS tokens left and
// patch tokens right, shared experts against the MoE layer, corresponding tokens solid and
// non-corresponding dashed, the same y range everywhere.
void consistency_plot(const Consistency& c, const std::string& prefix, Plotter& plotter,
                      FigureSection& section) {
  Blocks blocks;
  double top = 0;
  std::size_t layers = 1;
  std::string panels;
  for (std::size_t gi = 0; gi < c.groups.size(); ++gi) {
    const GroupConsistency& g = c.groups[gi];
    layers = std::max(layers, g.layers.size());
    for (int t = 0; t < 2; ++t) {
      std::string plot;
      for (int corr = 1; corr >= 0; --corr) {
        std::string rows;
        for (std::size_t l = 0; l < g.layers.size(); ++l) {
          const MeanStd& s = corr ? g.layers[l].corresponding[t] : g.layers[l].noncorresponding[t];
          rows += std::to_string(l) + " " + gp_number(s.mean) + " " + gp_number(bar(s)) + "\n";
          if (s.n > 0) top = std::max(top, s.mean + bar(s));
        }
        const int i = blocks.add(
            g.label + (t ? " patch" : " CLS") + (corr ? " corresponding" : " non-corresponding"),
            rows);
        plot += std::string(plot.empty() ? "plot " : ", \\\n     ") + "DATA index " +
                std::to_string(i) + " using 1:2:3 with yerrorlines lw 2 " +
                (corr ? "dt 1 pt 7 lc rgb '#1f4e9c' title 'corresponding'"
                      : "dt 2 pt 6 lc rgb '#d95f02' title 'non-corresponding'");
      }
      panels += "set title " +
                gp_lines(wrap(g.label, 60) + (t ? "\npatch tokens" : "\nCLS tokens")) + "\n" +
                plot + "\n";
    }
  }
  if (blocks.count == 0) return;
  const std::string ymax = gp_number(std::max(1.0, top) * 1.35);  // room for the key on top
  const int rows = static_cast<int>(c.groups.size());
  std::string script = "set multiplot layout " + std::to_string(rows) + ",2 title " +
                       gp_string(c.evaluator +
                                 ": shared experts per MoE layer (mean ± std over "
                                 "seeds)") +
                       "\nset xlabel 'MoE layer'\nset ylabel 'shared experts'\nset xtics 1" +
                       "\nset yrange [0:" + ymax + "]\nset xrange [-0.3:" + std::to_string(layers) +
                       "-0.7]\nset key top right horizontal\n" + panels + "unset multiplot\n";
  if (auto f = plotter.plot(prefix + c.evaluator, blocks.data, script,
                            c.evaluator + ": shared experts of corresponding (solid) and "
                                          "non-corresponding (dashed) tokens per MoE layer, one "
                                          "row per configuration (CR-MoE Fig. 3)",
                            1000, 80 + 290 * rows))
    section.figures.push_back(*f);
}

// Fig. 3: the table per MoE layer, then the panels (when there is a plotter).
FigureSection consistency_section(const std::vector<LabelledGroup>& groups,
                                  const std::string& title, const std::string& prefix,
                                  Plotter* plotter) {
  FigureSection section;
  section.title = title;
  for (const Consistency& c : collect_consistency(groups)) {
    const std::string what =
        "Shared experts (of the top k) between tokens of two colour-only views: corresponding "
        "= same image and position, non-corresponding = different images; gap = corresponding "
        "− non-corresponding, per seed, then mean ± std over seeds.";
    section.intro_md += "`" + c.evaluator + "`: " + what + "\n\n" + consistency_markdown(c) + "\n";
    section.intro_html += "<p class=\"note\"><code>" + html_escape(c.evaluator) +
                          "</code>: " + html_escape(what) + "</p>\n" + consistency_html(c);
    if (plotter) consistency_plot(c, prefix, *plotter, section);
  }
  return section;
}

std::vector<FigureSection> without_empty(std::vector<FigureSection> sections) {
  sections.erase(std::remove_if(sections.begin(), sections.end(),
                                [](const FigureSection& s) {
                                  return s.figures.empty() && s.intro_md.empty();
                                }),
                 sections.end());
  return sections;
}

}  // namespace

std::vector<FigureSection> experiment_sections(const ExperimentRuns& e, const Table& table,
                                               Plotter* plotter) {
  const auto groups = labelled(e);
  std::vector<FigureSection> out;
  out.push_back({"Metrics against hyper-parameters", {}, false, "", ""});
  if (plotter) metric_plots(e, table, *plotter, out.back());
  out.push_back(consistency_section(groups, "Routing consistency per MoE layer (CR-MoE Fig. 3)", "",
                                    plotter));
  if (plotter) {
    out.push_back({"Training curves", {}, false, "", ""});
    curve_plots(groups, "", Curves::Totals, *plotter, out.back());
    out.push_back({"Training curves of each MoE layer", {}, true, "", ""});
    curve_plots(groups, "", Curves::PerLayer, *plotter, out.back());
    out.push_back({"Routing: load entropy of each MoE layer", {}, true, "", ""});
    entropy_plots(groups, *plotter, out.back());
    out.push_back({"Routing: final expert load", {}, true, "", ""});
    load_maps(groups, *plotter, out.back());
  }
  return without_empty(std::move(out));
}

std::vector<FigureSection> comparison_sections(
    const std::vector<const ExperimentRuns*>& experiments, Plotter* plotter) {
  std::vector<LabelledGroup> groups;
  for (const auto* e : experiments)
    for (auto& lg : labelled(*e, e->name + ": ")) groups.push_back(lg);
  std::vector<FigureSection> out;
  out.push_back(consistency_section(
      groups, "Routing consistency per MoE layer, all experiments (CR-MoE Fig. 3)", "all_",
      plotter));
  if (plotter) {
    out.push_back({"Training loss, all experiments", {}, false, "", ""});
    curve_plots(groups, "all_", Curves::TrainLoss, *plotter, out.back());
  }
  return without_empty(std::move(out));
}

FigureSection evaluator_images(const ExperimentRuns& e) {
  FigureSection section;
  section.title = "Evaluator images (first seed of each group)";
  section.folded = true;
  for (const auto& g : e.groups) {
    for (const auto& p : g.points) {
      if (p.images.empty()) continue;
      for (const auto& image : p.images)
        section.figures.push_back(
            {fs::absolute(image), e.group_label(g) + ", seed " + std::to_string(p.seed) + ": " +
                                      image.lexically_relative(p.dir / "eval").string()});
      break;
    }
  }
  return section;
}

}  // namespace wb
