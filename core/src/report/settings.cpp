#include "report/settings.h"

#include <algorithm>

#include "config/tree.h"
#include "config/validate.h"  // did_you_mean, join

namespace wb {

namespace {

using config::fail;
using config::Node;

const std::vector<std::string> kReportKeys = {"columns", "names", "precision", "title", "baseline"};

// names = { "a.b" = "x" } and names = { a.b = "x" } (nested tables) both give "a.b" -> "x".
void flatten_names(const Node& table, const std::string& prefix,
                   std::map<std::string, std::string>& out) {
  for (const auto& m : table.members) {
    const std::string key = prefix.empty() ? m.key : prefix + "." + m.key;
    if (m.value.is_table())
      flatten_names(m.value, key, out);
    else if (m.value.is_string())
      out[key] = m.value.text;
    else
      fail(m.value.pos, "[report].names: the display name of '" + key + "' must be a string, got " +
                            node_type_name(m.value) + " " + config::literal(m.value));
  }
}

// baseline = { "losses.ogar.alpha" = 0.0 } or { losses.ogar.alpha = 0.0 }: nested tables are
// flattened the same way, except plugin tables, which are values (gate = { plugin = "fixed" }).
void flatten_baseline(const Node& table, const std::string& prefix,
                      std::vector<std::pair<std::string, std::string>>& out) {
  for (const auto& m : table.members) {
    const std::string key = prefix.empty() ? m.key : prefix + "." + m.key;
    if (m.value.is_table() && !m.value.find("plugin"))
      flatten_baseline(m.value, key, out);
    else
      out.emplace_back(key, config::literal(m.value));
  }
}

ReportSettings parse_report_table(const Node& table) {
  ReportSettings s;
  for (const auto& m : table.members) {
    const Node& v = m.value;
    auto wrong = [&](const std::string& expected) {
      fail(v.pos, "[report]." + m.key + ": expected " + expected + ", got " + node_type_name(v) +
                      " " + config::literal(v));
    };
    if (m.key == "columns") {
      if (!v.is_array()) wrong("an array of metric names like \"knn/top1\"");
      for (const auto& item : v.items) {
        if (!item.is_string())
          fail(item.pos,
               "[report].columns: expected metric names (strings) like \"knn/top1\", got " +
                   config::literal(item));
        if (std::find(s.columns.begin(), s.columns.end(), item.text) != s.columns.end())
          fail(item.pos, "[report].columns lists '" + item.text + "' twice");
        s.columns.push_back(item.text);
      }
    } else if (m.key == "names") {
      if (!v.is_table()) wrong("a table of column = \"display name\"");
      flatten_names(v, "", s.names);
    } else if (m.key == "precision") {
      if (v.type != Node::Type::Int) wrong("an integer (digits after the decimal point)");
      if (v.integer < 0 || v.integer > 12)
        fail(v.pos, "[report].precision must be between 0 and 12, got " + config::literal(v));
      s.precision = static_cast<int>(v.integer);
    } else if (m.key == "title") {
      if (!v.is_string()) wrong("a string");
      s.title = v.text;
    } else if (m.key == "baseline") {
      if (!v.is_table()) wrong("a table of key = value naming one configuration");
      flatten_baseline(v, "", s.baseline);
      if (s.baseline.empty()) fail(v.pos, "[report].baseline is empty");
    } else {
      fail(m.key_pos, "unknown key '" + m.key + "' in [report]" +
                          config::did_you_mean(m.key, kReportKeys) +
                          " (valid: " + config::join(kReportKeys) + ")");
    }
  }
  return s;
}

}  // namespace

ExperimentHeader parse_experiment_header(const std::string& text, const std::string& origin) {
  const Node doc = config::parse_toml(text, origin);
  ExperimentHeader h;
  if (const Node* exp = doc.find("experiment"); exp && exp->is_table())
    if (const Node* name = exp->find("name"); name && name->is_string()) h.name = name->text;
  if (const Node* report = doc.find("report")) {
    if (!report->is_table())
      fail(report->pos, std::string("[report] must be a table, got ") + node_type_name(*report));
    h.report = parse_report_table(*report);
  }
  return h;
}

}  // namespace wb
