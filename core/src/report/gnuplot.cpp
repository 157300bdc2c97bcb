#include "report/gnuplot.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <stdexcept>

#include "config/tree.h"  // format_real
#include "store/atomic_file.h"

namespace wb {

namespace fs = std::filesystem;

fs::path find_executable(const std::string& name) {
  if (name.empty()) return {};
  if (name.find('/') != std::string::npos)
    return ::access(name.c_str(), X_OK) == 0 ? fs::path(name) : fs::path();
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    const fs::path candidate = fs::path(dirs.substr(start, end - start)) / name;
    std::error_code ec;
    if (end > start && fs::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
    start = end + 1;
  }
  return {};
}

int run_process(const std::vector<std::string>& argv, const fs::path& cwd, const fs::path& log) {
  if (argv.empty()) throw std::invalid_argument("run_process: empty argv");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return 127;
  if (pid == 0) {  // child: only async-signal-safe calls until exec
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::close(fd);
    }
    const int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, 0);
    if (::chdir(cwd.c_str()) != 0) ::_exit(127);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return 127;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 127;
}

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
  const int code = run_process({gnuplot_.string(), unique + ".gp"}, dir_, log);
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
