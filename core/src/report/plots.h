// The figure sections of a report (plots drawn by gnuplot through Plotter) and the evaluator
// images it shows, in the order a reader needs them:
//   metrics vs each numeric varied key, with error bars over seeds;
//   routing consistency (CR-MoE Fig. 3): a table per MoE layer and one panel per group and
//   token kind, corresponding vs non-corresponding shared experts against the MoE layer;
//   training curves: train/loss and each loss term's total (open), per-layer terms (folded);
//   routing per MoE layer: load entropy over steps, final expert load maps (folded);
//   PNGs evaluators wrote under <run>/eval/, for the first seed of each group (folded).
#pragma once

#include <string>
#include <vector>

#include "report/gnuplot.h"
#include "report/runs.h"
#include "report/table.h"

namespace wb {

struct FigureSection {
  std::string title;
  std::vector<Figure> figures;
  bool folded = false;               // shown closed (HTML <details>)
  std::string intro_md, intro_html;  // a table shown before the figures
};

struct LabelledGroup {
  std::string label;
  const Group* group;
};

// Every section of one experiment; `table` gives the metric columns and display names. Without
// a plotter (no gnuplot) the sections hold their tables only. Empty sections are left out.
std::vector<FigureSection> experiment_sections(const ExperimentRuns& experiment, const Table& table,
                                               Plotter* plotter);

// Sections across experiments: routing consistency and train/loss of every group of each.
std::vector<FigureSection> comparison_sections(
    const std::vector<const ExperimentRuns*>& experiments, Plotter* plotter);

// The PNGs under eval/ of the first seed (that has any) of each group. No gnuplot involved.
FigureSection evaluator_images(const ExperimentRuns& experiment);

}  // namespace wb
