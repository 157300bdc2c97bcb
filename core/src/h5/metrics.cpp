#include "h5/metrics.h"

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <optional>
#include <stdexcept>

#include "h5/h5.h"
#include "store/atomic_file.h"
#include "store/disk_space.h"

namespace wb {

namespace {

constexpr const char* kFormat = "workbench-metrics";
constexpr std::int64_t kFormatVersion = 1;

// Rejects names that would not map one-to-one onto HDF5 group paths.
void check_name(const std::string& name, const char* what) {
  bool ok = !name.empty() && name.front() != '/' && name.back() != '/';
  std::size_t start = 0;
  while (ok && start <= name.size()) {
    std::size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    const std::string part = name.substr(start, end - start);
    ok = !part.empty() && part != "." && part != "..";
    start = end + 1;
  }
  if (!ok)
    throw std::invalid_argument(std::string("invalid ") + what + " name '" + name +
                                "' (use non-empty parts separated by single '/')");
}

std::pair<std::string, std::string> split_last(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return {"", path};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

// Every series below `group`, named by its path relative to `prefix`.
void collect_series(const h5::Group& group, const std::string& prefix,
                    std::vector<std::string>& out) {
  const auto children = group.children();
  auto is_dataset = [&](const char* name) {
    return std::any_of(children.begin(), children.end(), [&](const h5::Group::Child& c) {
      return c.name == name && c.kind == h5::Group::Kind::Dataset;
    });
  };
  if (!prefix.empty() && is_dataset("step") && is_dataset("value")) {
    out.push_back(prefix);
    return;
  }
  for (const auto& c : children)
    if (c.kind == h5::Group::Kind::Group)
      collect_series(group.open_group(c.name), prefix.empty() ? c.name : prefix + "/" + c.name,
                     out);
}

// Every dataset below `group`, named by its path relative to `prefix`.
void collect_datasets(const h5::Group& group, const std::string& prefix,
                      std::map<std::string, std::vector<double>>& out) {
  for (const auto& c : group.children()) {
    const std::string name = prefix.empty() ? c.name : prefix + "/" + c.name;
    if (c.kind == h5::Group::Kind::Dataset)
      out[name] = group.open_dataset(c.name).read_float64();
    else if (c.kind == h5::Group::Kind::Group)
      collect_datasets(group.open_group(c.name), name, out);
  }
}

void write_format(h5::File& file) {
  file.set_string_attribute("format", kFormat);
  file.set_int_attribute("format_version", kFormatVersion);
}

}  // namespace

// --- MetricsFile

struct MetricsFile::Pending {
  struct Rows {
    std::int64_t width = 0;  // 0: scalar series (value [n]); m: array series (value [n, m])
    std::vector<std::int64_t> steps;
    std::vector<double> values;
  };
  struct EvalValue {
    std::vector<double> values;
    std::vector<std::int64_t> shape;
  };

  std::mutex mutex;
  std::map<std::string, Rows> series;
  std::map<std::string, std::int64_t> widths;  // known widths (buffered or in the file)
  std::optional<std::int64_t> truncate;
  std::optional<std::string> config;
  std::map<std::string, std::string> provenance;
  std::map<std::pair<std::string, std::string>, EvalValue> eval;

  bool empty() const {
    return series.empty() && !truncate && !config && provenance.empty() && eval.empty();
  }
  void clear() {
    series.clear();
    truncate.reset();
    config.reset();
    provenance.clear();
    eval.clear();
  }
  void add_row(const std::string& name, std::int64_t width, std::int64_t step,
               const double* values) {
    check_name(name, "series");
    auto known = widths.find(name);
    if (known != widths.end() && known->second != width)
      throw std::invalid_argument(
          "series '" + name + "' has " +
          (known->second == 0 ? std::string("scalar") : std::to_string(known->second)) +
          " values per row, not " + (width == 0 ? std::string("a scalar") : std::to_string(width)));
    widths[name] = width;
    Rows& rows = series[name];
    rows.width = width;
    rows.steps.push_back(step);
    rows.values.insert(rows.values.end(), values, values + std::max<std::int64_t>(width, 1));
  }

  // Appends everything buffered to an open copy of the metrics file.
  void apply(h5::File& file) const;
};

namespace {

// Drops rows from the first one whose step is past `last_step`, in every series.
void truncate_series(h5::Group& group, std::int64_t last_step) {
  std::vector<std::string> names;
  collect_series(group, "", names);
  for (const auto& name : names) {
    h5::Group series = group.open_group(name);
    h5::Dataset steps = series.open_dataset("step");
    const auto values = steps.read_int64();
    const auto keep =
        std::find_if(values.begin(), values.end(), [&](std::int64_t s) { return s > last_step; }) -
        values.begin();
    if (keep == static_cast<std::int64_t>(values.size())) continue;
    steps.resize_rows(keep);
    series.open_dataset("value").resize_rows(keep);
  }
}

}  // namespace

void MetricsFile::Pending::apply(h5::File& file) const {
  if (!file.has_attribute("format")) write_format(file);
  if (truncate && file.exists("series")) {
    h5::Group root = file.open_group("series");
    truncate_series(root, *truncate);
  }
  if (config) file.require_group("config").set_string_attribute("toml", *config);
  if (!provenance.empty()) {
    h5::Group group = file.require_group("provenance");
    for (const auto& [key, value] : provenance) group.set_string_attribute(key, value);
  }
  for (const auto& [key, result] : eval) {
    const auto [parent, leaf] = split_last("eval/" + key.first + "/" + key.second);
    h5::Group group = file.require_group(parent);
    group.remove(leaf);
    group.create_float64(leaf, result.values, result.shape);
  }
  for (const auto& [name, rows] : series) {
    h5::Group group = file.require_group("series/" + name);
    h5::Dataset steps =
        group.exists("step") ? group.open_dataset("step") : group.create_int64_series("step");
    h5::Dataset values = group.exists("value") ? group.open_dataset("value")
                                               : group.create_float64_series("value", rows.width);
    const auto shape = values.shape();
    const std::int64_t width = shape.size() == 2 ? shape[1] : 0;
    if (shape.empty() || shape.size() > 2 || width != rows.width)
      values.fail("holds rows of a different width than the buffered ones (" +
                  std::to_string(rows.width) + ")");
    if (steps.rows() != values.rows()) values.fail("has a different row count than 'step'");
    steps.append(rows.steps);
    values.append(rows.values);
  }
}

MetricsFile::MetricsFile(std::filesystem::path path)
    : path_(std::move(path)), pending_(std::make_unique<Pending>()) {
  if (std::filesystem::exists(path_)) {
    MetricsReader check(path_);  // throws naming the file if it is not a metrics file
    for (const auto& name : check.series_names()) {
      const Series series = check.series(name);
      pending_->widths[name] = series.is_array ? series.width : 0;
    }
    return;
  }
  const auto tmp = temporary_path(path_);
  try {
    h5::File file = h5::File::create(tmp);
    write_format(file);
    file.close_checked();
    fsync_file(tmp);
    commit_file(tmp, path_);
  } catch (const std::exception& e) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw WriteError(write_failure("metrics file", path_, e, "no metrics file was created"),
                     os_error_of(e));
  }
}

MetricsFile::~MetricsFile() {
  try {
    flush();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "warning: %s\n", e.what());  // destructors must not throw
  }
}

void MetricsFile::scalar(const std::string& name, std::int64_t step, double value) {
  std::lock_guard<std::mutex> lock(pending_->mutex);
  pending_->add_row(name, 0, step, &value);
}

void MetricsFile::array(const std::string& name, std::int64_t step,
                        const std::vector<double>& values) {
  if (values.empty()) throw std::invalid_argument("series '" + name + "': empty array row");
  std::lock_guard<std::mutex> lock(pending_->mutex);
  pending_->add_row(name, static_cast<std::int64_t>(values.size()), step, values.data());
}

void MetricsFile::truncate_after(std::int64_t step) {
  std::lock_guard<std::mutex> lock(pending_->mutex);
  for (auto& [name, rows] : pending_->series) {
    const std::size_t row_size = static_cast<std::size_t>(std::max<std::int64_t>(rows.width, 1));
    std::size_t keep = 0;
    while (keep < rows.steps.size() && rows.steps[keep] <= step) ++keep;
    rows.steps.resize(keep);
    rows.values.resize(keep * row_size);
  }
  pending_->truncate = pending_->truncate ? std::min(*pending_->truncate, step) : step;
}

void MetricsFile::set_config(const std::string& toml) {
  std::lock_guard<std::mutex> lock(pending_->mutex);
  pending_->config = toml;
}

void MetricsFile::set_provenance(const std::map<std::string, std::string>& attributes) {
  std::lock_guard<std::mutex> lock(pending_->mutex);
  for (const auto& [key, value] : attributes) {
    if (key.empty() || key.find('/') != std::string::npos)
      throw std::invalid_argument("invalid provenance key '" + key + "'");
    pending_->provenance[key] = value;
  }
}

void MetricsFile::eval_scalar(const std::string& evaluator, const std::string& metric,
                              double value) {
  eval_array(evaluator, metric, {value}, {});
}

void MetricsFile::eval_array(const std::string& evaluator, const std::string& metric,
                             const std::vector<double>& values,
                             const std::vector<std::int64_t>& shape) {
  check_name(evaluator, "evaluator");
  if (evaluator.find('/') != std::string::npos)
    throw std::invalid_argument("invalid evaluator name '" + evaluator + "' (no '/' allowed)");
  check_name(metric, "metric");
  std::int64_t count = 1;
  for (auto d : shape) {
    if (d < 0) throw std::invalid_argument("eval result '" + metric + "': negative dimension");
    count *= d;
  }
  if (count != static_cast<std::int64_t>(values.size()))
    throw std::invalid_argument("eval result " + evaluator + "/" + metric + ": shape holds " +
                                std::to_string(count) + " values, " +
                                std::to_string(values.size()) + " given");
  std::lock_guard<std::mutex> lock(pending_->mutex);
  pending_->eval[{evaluator, metric}] = {values, shape};
}

void MetricsFile::flush() {
  std::lock_guard<std::mutex> lock(pending_->mutex);
  if (pending_->empty()) return;
  const auto tmp = temporary_path(path_);
  try {
    // The copy is what gets modified: until the rename, the original stays complete.
    if (std::filesystem::exists(path_)) {
      std::filesystem::copy_file(path_, tmp, std::filesystem::copy_options::overwrite_existing);
      h5::File file = h5::File::open(tmp, true);
      pending_->apply(file);
      file.close_checked();
    } else {  // deleted under our feet: start a new file rather than lose the rows
      h5::File file = h5::File::create(tmp);
      write_format(file);
      pending_->apply(file);
      file.close_checked();
    }
    fsync_file(tmp);
    commit_file(tmp, path_);
  } catch (const std::exception& e) {
    std::error_code ec;
    if (!std::filesystem::is_directory(tmp, ec)) std::filesystem::remove(tmp, ec);
    throw WriteError(
        write_failure("metrics file", path_, e,
                      "it keeps every row up to the last flush; the new rows stay buffered"),
        os_error_of(e));
  }
  pending_->clear();
}

// --- MetricsReader

struct MetricsReader::Impl {
  h5::File file;
};

MetricsReader::MetricsReader(const std::filesystem::path& path) : impl_(std::make_unique<Impl>()) {
  impl_->file = h5::File::open(path, false);
  if (!impl_->file.has_attribute("format") ||
      impl_->file.string_attribute("format") != std::string(kFormat))
    throw h5::Error(path.string() + ": not a workbench metrics file (no format = \"" + kFormat +
                    "\" attribute)");
  const auto version = impl_->file.int_attribute("format_version");
  if (version > kFormatVersion)
    throw h5::Error(path.string() + ": metrics format version " + std::to_string(version) +
                    " is newer than this workbench reads (" + std::to_string(kFormatVersion) + ")");
}

MetricsReader::~MetricsReader() = default;

std::vector<std::string> MetricsReader::series_names() const {
  std::vector<std::string> names;
  if (impl_->file.exists("series")) collect_series(impl_->file.open_group("series"), "", names);
  return names;
}

bool MetricsReader::has_series(const std::string& name) const {
  return impl_->file.exists("series/" + name + "/step");
}

Series MetricsReader::series(const std::string& name) const {
  if (!has_series(name)) throw h5::Error(impl_->file.file() + ": no series '" + name + "'");
  h5::Group group = impl_->file.open_group("series/" + name);
  h5::Dataset values = group.open_dataset("value");
  Series out;
  out.steps = group.open_dataset("step").read_int64();
  out.values = values.read_float64();
  const auto shape = values.shape();
  out.is_array = shape.size() == 2;
  out.width = out.is_array ? shape[1] : 1;
  if (static_cast<std::int64_t>(out.values.size()) !=
      static_cast<std::int64_t>(out.steps.size()) * out.width)
    values.fail("row count differs from 'step'");
  return out;
}

std::map<std::string, std::map<std::string, std::vector<double>>> MetricsReader::eval() const {
  std::map<std::string, std::map<std::string, std::vector<double>>> out;
  if (!impl_->file.exists("eval")) return out;
  h5::Group root = impl_->file.open_group("eval");
  for (const auto& c : root.children())
    if (c.kind == h5::Group::Kind::Group)
      collect_datasets(root.open_group(c.name), "", out[c.name]);
  return out;
}

std::vector<std::int64_t> MetricsReader::eval_shape(const std::string& evaluator,
                                                    const std::string& metric) const {
  return impl_->file.open_dataset("eval/" + evaluator + "/" + metric).shape();
}

std::string MetricsReader::config() const {
  if (!impl_->file.exists("config")) return {};
  h5::Group group = impl_->file.open_group("config");
  return group.has_attribute("toml") ? group.string_attribute("toml") : std::string();
}

std::map<std::string, std::string> MetricsReader::provenance() const {
  std::map<std::string, std::string> out;
  if (!impl_->file.exists("provenance")) return out;
  h5::Group group = impl_->file.open_group("provenance");
  for (const auto& name : group.attribute_names()) out[name] = group.string_attribute(name);
  return out;
}

}  // namespace wb
