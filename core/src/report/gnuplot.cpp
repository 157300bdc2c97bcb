#include "report/gnuplot.h"

#include <cctype>
#include <cmath>
#include <stdexcept>

#include "config/tree.h"  // format_real
#include "process/spawn.h"
#include "store/atomic_file.h"

namespace wb {

namespace fs = std::filesystem;

std::string gp_string(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += '\'';
    out += c == '\n' ? ' ' : c;
  }
  return out + "'";
}

std::string gp_number(double v) {
  return std::isfinite(v) ? config::format_real(v) : std::string("NaN");
}

Plotter::Plotter(fs::path dir, fs::path gnuplot)
    : dir_(std::move(dir)), gnuplot_(std::move(gnuplot)) {}

std::optional<Figure> Plotter::plot(const std::string& name, const std::string& data,
                                    const std::string& script, const std::string& caption,
                                    int width, int height) {
  std::string base;
  for (char c : name)
    base += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ? c : '_';
  if (base.empty()) base = "plot";
  if (base.size() > 120) base.resize(120);  // file names stay far below NAME_MAX
  std::string unique = base;
  for (int i = 2; used_.count(unique); ++i) unique = base + "_" + std::to_string(i);
  used_.insert(unique);

  const fs::path png = dir_ / (unique + ".png"), log = dir_ / (unique + ".log");
  std::string text = "# " + caption + "\n";
  text += "# redraw: cd " + dir_.string() + " && gnuplot " + unique + ".gp\n";
  text += "set terminal pngcairo noenhanced size " + std::to_string(width) + "," +
          std::to_string(height) + " font 'sans,10'\n";
  text += "set encoding utf8\nset output " + gp_string(unique + ".png") + "\n";
  text += "DATA = " + gp_string(unique + ".dat") + "\n";
  text += "set grid\n";
  text += script;
  write_file_atomic(dir_ / (unique + ".dat"), data);
  write_file_atomic(dir_ / (unique + ".gp"), text);
  std::error_code ec;
  fs::remove(png, ec);
  ProcessSpec spec;
  spec.argv = {gnuplot_.string(), unique + ".gp"};
  spec.search_path = true;
  spec.cwd = dir_;
  spec.output = ProcessSpec::Output::File;
  spec.output_file = log;
  spec.null_stdin = true;
  const int code = run_process(spec);
  std::string output;
  try {
    output = read_file(log);
  } catch (const std::exception&) {
  }
  if (code != 0 || !fs::exists(png) || fs::file_size(png, ec) == 0) {
    ++failures;
    while (!output.empty() && std::isspace(static_cast<unsigned char>(output.back())))
      output.pop_back();
    if (output.size() > 400) output = "..." + output.substr(output.size() - 400);
    warnings.push_back("gnuplot failed on " + (dir_ / (unique + ".gp")).string() + " (exit " +
                       std::to_string(code) + ")" + (output.empty() ? "" : ": " + output));
    return std::nullopt;
  }
  if (output.empty()) fs::remove(log, ec);
  return Figure{png, caption};
}

}  // namespace wb
