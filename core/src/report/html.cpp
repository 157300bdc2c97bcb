#include "report/html.h"

#include <cctype>
#include <cstdio>

namespace wb {

namespace fs = std::filesystem;

namespace {

const char* const kStyle = R"(
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1400px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ccc; padding-bottom: .2em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.1em; margin-top: 1.5em; }
table.report { border-collapse: collapse; margin: 1em 0; font-size: .95em; }
table.report th, table.report td { padding: .3em .8em; border-bottom: 1px solid #ddd; }
table.report th { background: #f2f2f2; text-align: left; border-bottom: 2px solid #999; }
table.report th.num { text-align: right; }
table.report td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.report tr.baseline td { background: #fff8e0; }
table.report b { color: #0a3d8f; }
p.note { color: #555; font-size: .9em; max-width: 60em; }
.problems li { margin: .2em 0; }
.problems code, p code { background: #f4f4f4; padding: 0 .2em; }
.error { color: #a00; font-weight: bold; }
.warning { color: #8a5a00; }
.figures { display: flex; flex-wrap: wrap; gap: 1.2em; }
figure { margin: 0; border: 1px solid #ddd; padding: .5em; background: #fff; max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { font-size: .85em; color: #444; margin-top: .3em; max-width: 900px; }
details { margin: 1em 0; border: 1px solid #ddd; padding: .4em .8em; background: #fafafa; }
details summary { cursor: pointer; font-weight: 600; }
)";

// Image paths as URL paths: relative, with reserved characters percent-encoded.
std::string url_path(const fs::path& path) {
  std::string out;
  for (unsigned char c : path.generic_string()) {
    if (std::isalnum(c) || c == '/' || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char hex[4];
      std::snprintf(hex, sizeof hex, "%%%02X", c);
      out += hex;
    }
  }
  return out;
}

// Open sections under a heading; folded ones as a closed <details> whose summary names them.
std::string figures_html(const std::vector<FigureSection>& sections, const fs::path& dir,
                         const char* heading) {
  std::string out;
  for (const auto& s : sections) {
    if (s.figures.empty() && s.intro_html.empty()) continue;
    if (s.folded)
      out += "<details>\n<summary>" + html_escape(s.title) + " (" +
             std::to_string(s.figures.size()) + (s.figures.size() == 1 ? " figure" : " figures") +
             ")</summary>\n";
    else
      out += std::string("<") + heading + ">" + html_escape(s.title) + "</" + heading + ">\n";
    out += s.intro_html;
    if (!s.figures.empty()) {
      out += "<div class=\"figures\">\n";
      for (const auto& f : s.figures) {
        const fs::path rel = f.image.lexically_relative(dir);
        out += "<figure><a href=\"" + url_path(rel) + "\"><img src=\"" + url_path(rel) +
               "\" alt=\"" + html_escape(f.caption) + "\" loading=\"lazy\"></a><figcaption>" +
               html_escape(f.caption) + "</figcaption></figure>\n";
      }
      out += "</div>\n";
    }
    if (s.folded) out += "</details>\n";
  }
  return out;
}

std::string summary(const ExperimentRuns& e) {
  return "Experiment <code>" + html_escape(e.name) + "</code> in <code>" +
         html_escape(e.dir.string()) + "</code>: " + counts_sentence(e);
}

std::string problems_html(const ExperimentRuns& e) {
  const auto points = unfinished_points(e);
  if (points.empty()) return "";
  // A long list (a sweep still running) is folded, so that the comparison stays on top.
  const bool fold = points.size() > 5;
  std::string out = fold ? "<details>\n<summary>Failed and unfinished points (" +
                               std::to_string(points.size()) + ")</summary>\n"
                         : "<h3>Failed and unfinished points</h3>\n";
  out += "<ul class=\"problems\">\n";
  for (const PointRun* p : points)
    out += "<li><code>" + html_escape(p->id) + "</code> " + html_escape(p->label) + ": " +
           html_escape(point_problem(*p)) + " (<code>" + html_escape(p->dir.string()) +
           "/run.log</code>)</li>\n";
  return out + (fold ? "</ul>\n</details>\n" : "</ul>\n");
}

}  // namespace

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string html_page(const HtmlPage& page, const fs::path& dir) {
  std::string out =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" +
      html_escape(page.title) + "</title>\n<style>" + kStyle + "</style>\n</head>\n<body>\n";
  out += "<h1>" + html_escape(page.title) + "</h1>\n";
  if (!page.plot_error.empty())
    out += "<p class=\"error\">No plots: " + html_escape(page.plot_error) + "</p>\n";
  for (const auto& w : page.warnings)
    out += "<p class=\"warning\">warning: " + html_escape(w) + "</p>\n";
  const bool compare = page.combined != nullptr;
  if (compare) {
    out += "<h2>All experiments</h2>\n" + html_table(*page.combined) + "<p class=\"note\">" +
           html_escape(table_notes(*page.combined)) + "</p>\n";
    out += figures_html(page.combined_figures, dir, "h3");
  }
  for (const auto& s : page.sections) {
    const char* sub = compare ? "h3" : "h2";
    if (compare) out += "<h2>" + html_escape(s.experiment->name) + "</h2>\n";
    out += "<p>" + summary(*s.experiment) + "</p>\n" + html_table(*s.table) + "<p class=\"note\">" +
           html_escape(table_notes(*s.table)) + "</p>\n";
    out += problems_html(*s.experiment);
    out += figures_html(s.figures, dir, sub);
  }
  return out +
         "<p class=\"note\">Written by <code>workbench report</code>; data and gnuplot "
         "scripts of every plot are in <code>plots/</code>.</p>\n</body>\n</html>\n";
}

}  // namespace wb
