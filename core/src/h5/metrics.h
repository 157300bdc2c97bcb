// The metrics file of a run (layout in docs/metrics.md). Rows are buffered in memory and
// written at flush(), which copies the file, appends, fsyncs and renames it into place: the
// file on disk is always a complete HDF5 file holding everything up to the last flush.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace wb {

class MetricsFile {
 public:
  // Opens (creating if needed) the metrics file of a run. An existing file is kept: a resumed
  // run appends to it.
  explicit MetricsFile(std::filesystem::path path);
  ~MetricsFile();  // flushes; never throws
  MetricsFile(const MetricsFile&) = delete;
  MetricsFile& operator=(const MetricsFile&) = delete;

  // A point of the scalar series /series/<name>. Names may contain '/' (nested groups) but no
  // empty or '.'/'..' parts, and a series keeps the width of its first row: both are checked
  // here and throw std::invalid_argument.
  void scalar(const std::string& name, std::int64_t step, double value);
  // A row of the array series /series/<name>: value shape [n, values.size()].
  void array(const std::string& name, std::int64_t step, const std::vector<double>& values);

  // Drops series rows with step > `step` (a run resumed from an earlier checkpoint).
  // Applied to the file at the next flush; buffered rows past `step` are dropped at once.
  // Rows are kept up to the first one past `step` (steps of a series only increase).
  void truncate_after(std::int64_t step);

  void set_config(const std::string& toml);
  void set_provenance(const std::map<std::string, std::string>& attributes);
  // /eval/<evaluator>/<metric>: a scalar, or an array with its shape.
  void eval_scalar(const std::string& evaluator, const std::string& metric, double value);
  void eval_array(const std::string& evaluator, const std::string& metric,
                  const std::vector<double>& values, const std::vector<std::int64_t>& shape);

  // Writes everything buffered. Throws std::runtime_error naming the file if it cannot (full
  // disk, ...); the previous file then stays as it was.
  void flush();
  const std::filesystem::path& path() const { return path_; }

 private:
  struct Pending;
  std::filesystem::path path_;
  std::unique_ptr<Pending> pending_;
};

// Reading side, for reports and tests.
struct Series {
  std::vector<std::int64_t> steps;
  std::vector<double> values;  // row-major [steps.size(), width]
  std::int64_t width = 1;
  bool is_array = false;  // value is [n, width] (an array series) rather than [n]
};

class MetricsReader {
 public:
  // Throws naming the file if it is unreadable.
  explicit MetricsReader(const std::filesystem::path& path);
  ~MetricsReader();
  std::vector<std::string> series_names() const;
  Series series(const std::string& name) const;
  // evaluator -> metric -> values
  std::map<std::string, std::map<std::string, std::vector<double>>> eval() const;
  // Shape of one eval result (empty for a scalar); throws naming the file if it is missing.
  std::vector<std::int64_t> eval_shape(const std::string& evaluator,
                                       const std::string& metric) const;
  bool has_series(const std::string& name) const;
  std::string config() const;
  std::map<std::string, std::string> provenance() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace wb
