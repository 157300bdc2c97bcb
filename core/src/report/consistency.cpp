#include "report/consistency.h"

#include <algorithm>
#include <set>

#include "report/html.h"
#include "report/table.h"  // format_stat

namespace wb {

namespace {

const char* const kTokens[2] = {"cls", "patch"};

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

// Per layer, the values of one array over the group's done points (one entry per seed).
std::vector<std::vector<double>> per_layer(const std::vector<const PointRun*>& points,
                                           const std::string& name) {
  std::vector<std::vector<double>> out;
  for (const PointRun* p : points) {
    auto it = p->vectors.find(name);
    if (it == p->vectors.end()) continue;
    if (out.size() < it->second.size()) out.resize(it->second.size());
    for (std::size_t l = 0; l < it->second.size(); ++l) out[l].push_back(it->second[l]);
  }
  return out;
}

// corr - noncorr of every seed that has both arrays, per layer.
std::vector<std::vector<double>> gaps(const std::vector<const PointRun*>& points,
                                      const std::string& corr, const std::string& non) {
  std::vector<std::vector<double>> out;
  for (const PointRun* p : points) {
    auto a = p->vectors.find(corr), b = p->vectors.find(non);
    if (a == p->vectors.end() || b == p->vectors.end()) continue;
    const std::size_t n = std::min(a->second.size(), b->second.size());
    if (out.size() < n) out.resize(n);
    for (std::size_t l = 0; l < n; ++l) out[l].push_back(a->second[l] - b->second[l]);
  }
  return out;
}

MeanStd at(const std::vector<std::vector<double>>& values, std::size_t layer) {
  return layer < values.size() ? mean_std(values[layer]) : MeanStd{};
}

const char* const kHeader[] = {"group",   "MoE layer",   "CLS corr.",       "CLS non-corr.",
                               "CLS gap", "patch corr.", "patch non-corr.", "patch gap"};

std::vector<std::string> cells(const GroupConsistency& g, std::size_t layer) {
  const LayerConsistency& l = g.layers[layer];
  std::vector<std::string> out = {g.label, std::to_string(layer)};
  for (int t = 0; t < 2; ++t) {
    out.push_back(format_stat(l.corresponding[t], 2, false));
    out.push_back(format_stat(l.noncorresponding[t], 2, false));
    out.push_back(format_stat(l.gap[t], 2, false));
  }
  return out;
}

std::string md_cell(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

}  // namespace

std::vector<Consistency> collect_consistency(const std::vector<LabelledGroup>& groups) {
  std::set<std::string> evaluators;
  for (const auto& lg : groups)
    for (const auto& p : lg.group->points)
      if (p.done())
        for (const auto& [name, v] : p.vectors)
          if (starts_with(name, "routing_consistency"))
            evaluators.insert(name.substr(0, name.find('/')));
  std::vector<Consistency> out;
  for (const auto& ev : evaluators) {
    Consistency c;
    c.evaluator = ev;
    for (const auto& lg : groups) {
      std::vector<const PointRun*> points;
      for (const auto& p : lg.group->points)
        if (p.done()) points.push_back(&p);
      GroupConsistency g;
      g.label = lg.label;
      std::size_t layers = 0;
      std::vector<std::vector<double>> corr[2], non[2], gap[2];
      for (int t = 0; t < 2; ++t) {
        const std::string a = ev + "/" + kTokens[t] + "_corresponding",
                          b = ev + "/" + kTokens[t] + "_noncorresponding";
        corr[t] = per_layer(points, a);
        non[t] = per_layer(points, b);
        gap[t] = gaps(points, a, b);
        layers = std::max({layers, corr[t].size(), non[t].size()});
      }
      if (layers == 0) continue;
      for (std::size_t l = 0; l < layers; ++l) {
        LayerConsistency lc;
        for (int t = 0; t < 2; ++t) {
          lc.corresponding[t] = at(corr[t], l);
          lc.noncorresponding[t] = at(non[t], l);
          lc.gap[t] = at(gap[t], l);
        }
        g.layers.push_back(lc);
      }
      c.groups.push_back(std::move(g));
    }
    if (!c.groups.empty()) out.push_back(std::move(c));
  }
  return out;
}

std::string consistency_markdown(const Consistency& c) {
  std::string out = "|";
  for (const char* h : kHeader) out += std::string(" ") + h + " |";
  out += "\n|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& g : c.groups)
    for (std::size_t l = 0; l < g.layers.size(); ++l) {
      out += "|";
      for (const auto& cell : cells(g, l)) out += " " + md_cell(cell) + " |";
      out += "\n";
    }
  return out;
}

std::string consistency_html(const Consistency& c) {
  std::string out = "<table class=\"report\">\n<thead><tr>";
  for (std::size_t i = 0; i < std::size(kHeader); ++i)
    out += std::string(i >= 1 ? "<th class=\"num\">" : "<th>") + html_escape(kHeader[i]) + "</th>";
  out += "</tr></thead>\n<tbody>\n";
  for (const auto& g : c.groups)
    for (std::size_t l = 0; l < g.layers.size(); ++l) {
      const auto row = cells(g, l);
      out += "<tr>";
      for (std::size_t i = 0; i < row.size(); ++i)
        out += std::string(i >= 1 ? "<td class=\"num\">" : "<td>") + html_escape(row[i]) + "</td>";
      out += "</tr>\n";
    }
  return out + "</tbody>\n</table>\n";
}

}  // namespace wb
