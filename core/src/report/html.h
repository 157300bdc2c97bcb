// index.html of a report: one self-contained page (inline CSS, images referenced relatively)
// with the tables, the points that failed or did not finish, and the figures.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "report/plots.h"
#include "report/runs.h"
#include "report/table.h"

namespace wb {

struct HtmlSection {
  const ExperimentRuns* experiment;
  const Table* table;
  std::vector<FigureSection> figures;  // plots, then evaluator images
};

struct HtmlPage {
  std::string title;
  const Table* combined = nullptr;              // comparison of several experiments
  std::vector<FigureSection> combined_figures;  // plots across experiments
  std::vector<HtmlSection> sections;            // one per experiment
  std::string plot_error;                       // why there are no plots at all
  std::vector<std::string> warnings;
};

// `dir` is where index.html goes: image paths are written relative to it.
std::string html_page(const HtmlPage& page, const std::filesystem::path& dir);

// Text for HTML element content and attribute values.
std::string html_escape(const std::string& text);

}  // namespace wb
