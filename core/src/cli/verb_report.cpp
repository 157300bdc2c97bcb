// `workbench report DIR [DIR...]`: the comparison report of one or more experiment
// directories (runs/<experiment>): report.md, report.csv, index.html and plots.
#include <boost/program_options.hpp>
#include <iostream>

#include "cli/cli.h"
#include "report/report.h"

namespace wb::cli {

namespace po = boost::program_options;

int verb_report(const Args& args) {
  po::options_description opts(
      "workbench report DIR [DIR...] [options]\n\n"
      "DIR is an experiment directory (runs/<experiment>). With one DIR the report goes to\n"
      "DIR/report; with several, the experiments are compared side by side in\n"
      "runs/compare-<names> unless --out says otherwise.\n\noptions");
  std::vector<std::string> dirs;
  std::string out, gnuplot = "gnuplot";
  opts.add_options()("help,h", "show this help")("out,o", po::value(&out),
                                                 "where to write the report")(
      "no-plots", "write the tables and index.html without plots")(
      "gnuplot", po::value(&gnuplot), "gnuplot executable (default: gnuplot on PATH)");
  po::options_description hidden;
  hidden.add_options()("dir", po::value(&dirs)->composing(), "experiment directories");
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description positional;
  positional.add("dir", -1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
  po::notify(vm);
  if (vm.count("help") || dirs.empty()) {
    (dirs.empty() && !vm.count("help") ? std::cerr : std::cout) << opts;
    return vm.count("help") ? 0 : 2;
  }

  ReportOptions options;
  options.out = out;
  options.plots = vm.count("no-plots") == 0;
  options.gnuplot = gnuplot;
  std::vector<std::filesystem::path> paths(dirs.begin(), dirs.end());
  const ReportResult result = write_report(paths, options);
  for (const auto& w : result.warnings) std::cerr << "warning: " << w << "\n";
  std::cout << "report: " << (result.dir / "index.html").string() << " (" << result.plots
            << " plots), report.md, report.csv\n";
  if (!result.plot_error.empty()) {
    std::cerr << "error: " << result.plot_error << "\n";
    return 1;
  }
  return 0;
}

}  // namespace wb::cli
