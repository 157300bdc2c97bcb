// `workbench report`: the comparison report of one experiment directory (runs/<experiment>),
// or of several side by side. Writes report.md, report.csv, index.html and plots/
// (docs/reports.md).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace wb {

struct ReportOptions {
  std::filesystem::path out;        // empty: DIR/report, or runs/compare-<names> for several
  bool plots = true;                // draw plots with gnuplot
  std::string gnuplot = "gnuplot";  // executable, searched on PATH
};

struct ReportResult {
  std::filesystem::path dir;          // where the report was written
  std::vector<std::string> warnings;  // problems that did not stop the report
  std::string plot_error;  // non-empty: no plots were drawn (gnuplot missing); tables written
  std::size_t plots = 0;   // plots drawn
  std::size_t plot_failures = 0;
};

// Reads every point of each directory and writes the report. Failed or unfinished points are
// listed, never fatal. Throws (naming the directory or file) when a directory holds no points
// or its experiment.toml has a malformed [report] table, or a report file cannot be written.
ReportResult write_report(const std::vector<std::filesystem::path>& experiment_dirs,
                          const ReportOptions& options = {});

}  // namespace wb
