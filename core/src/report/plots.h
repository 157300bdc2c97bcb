// The plots of a report (drawn by gnuplot through Plotter) and the evaluator images it shows:
//   metrics vs each numeric varied key, with error bars over seeds;
//   training curves (train/loss, loss/*) averaged over seeds;
//   routing: load entropy per MoE layer over steps, final expert load as a layer x expert map;
//   routing consistency (CR-MoE Fig. 3): shared experts per MoE layer, corresponding vs not;
//   PNGs evaluators wrote under <run>/eval/, for the first seed of each group.
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
};

struct LabelledGroup {
  std::string label;
  const Group* group;
};

// Every plot of one experiment; `table` gives the metric columns and display names.
std::vector<FigureSection> experiment_plots(const ExperimentRuns& experiment, const Table& table,
                                            Plotter& plotter);

// Plots across experiments: train/loss and routing consistency of every group of each.
std::vector<FigureSection> comparison_plots(const std::vector<const ExperimentRuns*>& experiments,
                                            Plotter& plotter);

// The PNGs under eval/ of the first seed (that has any) of each group. No gnuplot involved.
FigureSection evaluator_images(const ExperimentRuns& experiment);

}  // namespace wb
