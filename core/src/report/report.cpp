#include "report/report.h"

#include <algorithm>
#include <optional>
#include <set>
#include <stdexcept>

#include "process/spawn.h"
#include "report/gnuplot.h"
#include "report/html.h"
#include "report/plots.h"
#include "report/runs.h"
#include "report/table.h"
#include "store/atomic_file.h"

namespace wb {

namespace fs = std::filesystem;

namespace {

// Marks a plot folder as the report's own, so that a rerun may empty it (and only then).
constexpr const char* kPlotMarker = ".workbench-report";

void prepare_plot_dir(const fs::path& dir) {
  if (fs::exists(dir / kPlotMarker)) fs::remove_all(dir);  // stale plots of an earlier report
  fs::create_directories(dir);
  write_file_atomic(dir / kPlotMarker, "plots of workbench report; emptied on each report\n");
}

// Settings of a comparison: the union of the experiments' columns and names (the first
// experiment wins), its precision and a baseline only if it names an experiment.
ReportSettings merged_settings(const std::vector<const ExperimentRuns*>& experiments) {
  ReportSettings m;
  for (const auto* e : experiments) {
    const ReportSettings& s = e->settings;
    for (const auto& c : s.columns)
      if (std::find(m.columns.begin(), m.columns.end(), c) == m.columns.end())
        m.columns.push_back(c);
    for (const auto& n : s.names) m.names.insert(n);
    if (!m.precision) m.precision = s.precision;
    const bool names_experiment =
        std::any_of(s.baseline.begin(), s.baseline.end(),
                    [](const auto& kv) { return kv.first == "experiment"; });
    if (m.baseline.empty() && names_experiment) m.baseline = s.baseline;
  }
  return m;
}

std::string md_summary(const ExperimentRuns& e) {
  return "Experiment `" + e.name + "` in `" + e.dir.string() + "`: " + counts_sentence(e) + "\n\n";
}

std::string md_problems(const ExperimentRuns& e, const std::string& heading) {
  const auto points = unfinished_points(e);
  if (points.empty()) return "";
  std::string out = heading + " Failed and unfinished points\n\n";
  for (const PointRun* p : points)
    out += "- `" + p->id + "` " + p->label + ": " + point_problem(*p) + "\n";
  return out + "\n";
}

// Figure sections in Markdown: the intro table and the images, relative to the report folder;
// folded sections inside <details> (GitHub renders them closed).
std::string md_figures(const std::vector<FigureSection>& sections, const fs::path& dir,
                       const std::string& heading) {
  std::string out;
  for (const auto& s : sections) {
    if (s.figures.empty() && s.intro_md.empty()) continue;
    out += s.folded ? "<details><summary>" + s.title + "</summary>\n\n"
                    : heading + " " + s.title + "\n\n";
    out += s.intro_md;
    for (const auto& f : s.figures)
      out += "![" + f.caption + "](" + f.image.lexically_relative(dir).generic_string() + ")\n\n";
    if (s.folded) out += "</details>\n\n";
  }
  return out;
}

void collect(const Plotter& plotter, ReportResult& result) {
  for (const auto& w : plotter.warnings) result.warnings.push_back(w);
  result.plot_failures += plotter.failures;
}

std::string md_section(const ExperimentRuns& e, const Table& t, const std::string& heading) {
  return md_summary(e) + markdown_table(t) + "\n" + table_notes(t) + "\n\n" +
         md_problems(e, heading);
}

// Absolute, normalised, without a trailing separator ("runs/x/" -> "/.../runs/x").
fs::path normal(const fs::path& path) {
  fs::path p = fs::absolute(path).lexically_normal();
  return p.has_filename() ? p : p.parent_path();
}

std::string join_names(const std::vector<ExperimentRuns>& runs, const std::string& sep) {
  std::string s;
  for (const auto& r : runs) s += (s.empty() ? "" : sep) + r.name;
  return s;
}

}  // namespace

ReportResult write_report(const std::vector<fs::path>& dirs, const ReportOptions& options) {
  if (dirs.empty()) throw std::invalid_argument("report: no experiment directory given");
  ReportResult result;
  std::vector<ExperimentRuns> runs;
  for (const auto& d : dirs) {
    runs.push_back(load_experiment_runs(d));
    for (const auto& w : runs.back().warnings) result.warnings.push_back(w);
  }
  std::vector<const ExperimentRuns*> all;
  for (const auto& r : runs) all.push_back(&r);
  const bool compare = runs.size() > 1;

  fs::path out = options.out;
  if (out.empty())
    out = compare ? normal(dirs.front()).parent_path() / ("compare-" + join_names(runs, "-"))
                  : normal(dirs.front()) / "report";
  out = normal(out);
  fs::create_directories(out);
  result.dir = out;

  std::vector<Table> tables;
  for (const auto& r : runs) tables.push_back(build_table({&r}, r.settings, result.warnings));
  Table combined;
  if (compare) combined = build_table(all, merged_settings(all), result.warnings);
  const Table& main = compare ? combined : tables.front();

  // report.md: tables, then the figure sections (once they exist).
  auto markdown = [&](const HtmlPage& page) {
    auto figures = [&](const std::vector<FigureSection>& sections, const std::string& heading) {
      return md_figures(sections, out, heading);
    };
    std::string md = "# " + main.title + "\n\n";
    if (compare) {
      md += "## All experiments\n\n" + markdown_table(combined) + "\n" + table_notes(combined) +
            "\n\n" + figures(page.combined_figures, "###");
      for (std::size_t i = 0; i < runs.size(); ++i)
        md += "## " + runs[i].name + "\n\n" + md_section(runs[i], tables[i], "###") +
              figures(page.sections[i].figures, "###");
    } else {
      md += md_section(runs.front(), tables.front(), "##") +
            figures(page.sections.front().figures, "##");
    }
    if (!result.warnings.empty()) {
      md += "## Warnings\n\n";
      for (const auto& w : result.warnings) md += "- " + w + "\n";
      md += "\n";
    }
    return md;
  };

  HtmlPage page;
  page.title = main.title;
  if (compare) page.combined = &combined;
  for (std::size_t i = 0; i < runs.size(); ++i) page.sections.push_back({&runs[i], &tables[i], {}});

  // Tables first: they are written even if the plots fail.
  write_file_atomic(out / "report.md", markdown(page));
  write_file_atomic(out / "report.csv", csv_table(main));

  fs::path gnuplot;
  if (options.plots) {
    gnuplot = find_executable(options.gnuplot);
    if (gnuplot.empty())
      result.plot_error = "gnuplot not found (looked for '" + options.gnuplot +
                          "' on PATH): no plots were drawn; install it (Debian: apt-get install "
                          "gnuplot-nox) and run 'workbench report' again";
  }
  // The sections' tables (Fig. 3) come without gnuplot too; the figures need it.
  const fs::path plots = out / "plots";
  if (!gnuplot.empty()) prepare_plot_dir(plots);
  std::set<std::string> used;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    std::optional<Plotter> plotter;
    if (!gnuplot.empty()) {
      fs::path dir = plots;
      if (compare) {
        std::string name = runs[i].name;
        for (int k = 2; used.count(name) || name == "all"; ++k)
          name = runs[i].name + "_" + std::to_string(k);
        used.insert(name);
        dir = plots / name;
        fs::create_directories(dir);
      }
      plotter.emplace(dir, gnuplot);
    }
    page.sections[i].figures =
        experiment_sections(runs[i], tables[i], plotter ? &*plotter : nullptr);
    if (plotter) collect(*plotter, result);
  }
  if (compare) {
    std::optional<Plotter> plotter;
    if (!gnuplot.empty()) {
      fs::create_directories(plots / "all");
      plotter.emplace(plots / "all", gnuplot);
    }
    page.combined_figures = comparison_sections(all, plotter ? &*plotter : nullptr);
    if (plotter) collect(*plotter, result);
  }
  for (auto& s : page.sections) {
    for (const auto& f : s.figures) result.plots += f.figures.size();
    FigureSection images = evaluator_images(*s.experiment);
    if (!images.figures.empty()) s.figures.push_back(std::move(images));
  }
  for (const auto& f : page.combined_figures) result.plots += f.figures.size();

  write_file_atomic(out / "report.md", markdown(page));
  page.plot_error = result.plot_error;
  page.warnings = result.warnings;
  write_file_atomic(out / "index.html", html_page(page, out));
  return result;
}

}  // namespace wb
