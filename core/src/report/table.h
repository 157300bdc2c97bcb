// The comparison table of a report: one row per group of points (same assignments, several
// seeds), key columns for the varied keys, metric columns with mean ± std over seeds, the best
// mean of each column marked. Rendered as Markdown, CSV and HTML.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "report/runs.h"
#include "report/stats.h"

namespace wb {

struct Cell {
  MeanStd stat;
  bool best = false;
  std::optional<double> delta;  // mean minus the baseline row's mean
};

struct TableRow {
  std::string experiment;
  std::vector<std::string> keys;  // TOML literals per key column; "" when unknown
  std::vector<Cell> cells;        // per metric column
  std::size_t done = 0, total = 0, failed = 0;
  MeanStd seconds;  // elapsed time of the done points
  bool baseline = false;
  std::string label;  // the group's label ("α=0.3, λ=0.2"), for plots and notes
};

struct Table {
  std::string title;
  bool with_experiment = false;              // comparison of several experiments
  std::vector<std::string> keys;             // key column ids (dotted keys)
  std::vector<std::string> metrics;          // metric column ids ("<evaluator>/<metric>")
  std::vector<bool> lower_better;            // per metric column
  std::vector<bool> ranked;                  // per metric column: has a best value to mark
  std::map<std::string, std::string> names;  // display names
  int precision = 3;
  bool show_n = false;   // the number of seeds differs between cells
  std::string baseline;  // label of the baseline row; empty without one
  std::vector<TableRow> rows;

  std::string display_name(const std::string& column) const;
};

// Lower is better for metrics whose name contains "loss", "error" or "cv2".
bool lower_is_better(const std::string& metric);
// Whether a metric column has a best value at all: not for settings an evaluator chose or
// reports (lr, lr_at_edge, labelled, finetune, moe_layers), spreads (*_std) and routing
// statistics (shared experts: neither more nor fewer is better by itself). A "_view<v>" suffix
// is ignored.
bool ranked_metric(const std::string& metric);

// The table of one experiment, or the combined table of several (with an experiment column).
// `settings` chooses columns, names, precision, title and baseline; problems that do not stop
// the report (a requested column nobody measured, a baseline matching no row) go to
// `warnings`.
Table build_table(const std::vector<const ExperimentRuns*>& experiments,
                  const ReportSettings& settings, std::vector<std::string>& warnings);

// "70.70 ± 0.071" (std with one digit more than the mean), "70.70" for one seed, "—" for none;
// " (n=2)" appended when `show_n`.
std::string format_stat(const MeanStd& stat, int precision, bool show_n);
// "12.3 s", "4.5 min", "1.25 h"; "—" when unknown.
std::string format_seconds(double seconds);

std::string markdown_table(const Table& table);
// Machine-readable: raw column ids, one column each for mean, std, n, best (and delta), empty
// fields where there is no value, numbers that read back exactly.
std::string csv_table(const Table& table);
std::string html_table(const Table& table);
// The sentences under a table: what the values are, lower-is-better columns, the baseline.
std::string table_notes(const Table& table);

}  // namespace wb
