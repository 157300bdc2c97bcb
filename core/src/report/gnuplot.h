// Running gnuplot for report plots: every plot is a data file and a script in the plot folder
// (kept, so a plot can be restyled and redrawn by hand), drawn by one gnuplot process.
#pragma once

#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace wb {

// A gnuplot string literal: single quotes, a quote doubled (no escapes are interpreted).
std::string gp_string(const std::string& text);

// A number for a data file; "NaN" (gnuplot's undefined value) for non-finite ones.
std::string gp_number(double v);

struct Figure {
  std::filesystem::path image;  // absolute
  std::string caption;
};

class Plotter {
 public:
  // Plots go to `dir`; `gnuplot` is the executable to run (find_executable's result,
  // process/spawn.h).
  Plotter(std::filesystem::path dir, std::filesystem::path gnuplot);

  // Writes <name>.dat and <name>.gp, the script prefixed with the terminal settings and
  // `set output '<name>.png'` (it reads its data as DATA, a variable holding '<name>.dat'),
  // and runs gnuplot in the plot folder. Returns the figure, or nothing (with a warning) when
  // gnuplot failed. `name` is made unique and file-name safe.
  std::optional<Figure> plot(const std::string& name, const std::string& data,
                             const std::string& script, const std::string& caption, int width = 640,
                             int height = 400);

  std::vector<std::string> warnings;
  std::size_t failures = 0;

 private:
  std::filesystem::path dir_, gnuplot_;
  std::set<std::string> used_;
};

}  // namespace wb
