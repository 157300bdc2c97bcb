#include "cluster/cluster_file.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <stdexcept>

#include "config/run_config.h"
#include "config/settings.h"
#include "h5/h5.h"
#include "store/atomic_file.h"
#include "store/disk_space.h"

namespace wb {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "workbench clusters 1";
constexpr std::int64_t kFingerprintImages = 16;

std::string hex(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string list(const std::vector<std::int64_t>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

std::string describe_settings(const DataSettings& d) {
  std::ostringstream s;
  s << "dataset = " << d.dataset << "; path = " << d.path << "; classes = " << list(d.classes)
    << "; relabel = " << d.relabel << "; train_limit = " << d.train_limit
    << "; val_fraction = " << d.val_fraction << "; label_fraction = " << d.label_fraction
    << "; shots = " << d.shots << "; subset_seed = " << d.subset_seed
    << "; image_size = " << d.image_size << "; channels = " << d.channels;
  return s.str();
}

std::vector<double> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// Options are stored as float64 scalars under /options (integers exactly: they are small).
void write_options(h5::Group& group, const ClusteringOptions& o) {
  const std::vector<std::pair<const char*, double>> values = {{"clusters", double(o.clusters)},
                                                              {"epochs", double(o.epochs)},
                                                              {"batch", double(o.batch)},
                                                              {"lr", o.lr},
                                                              {"momentum", o.momentum},
                                                              {"weight_decay", o.weight_decay},
                                                              {"iterations", double(o.iterations)},
                                                              {"epsilon", o.epsilon},
                                                              {"temperature", o.temperature},
                                                              {"seed", double(o.seed)}};
  for (const auto& [name, value] : values) group.create_float64(name, {value}, {});
  group.set_string_attribute("assignment", o.assignment);
}

ClusteringOptions read_options(const h5::Group& group) {
  auto get = [&](const char* name) { return group.open_dataset(name).read_float64().at(0); };
  ClusteringOptions o;
  o.clusters = static_cast<std::int64_t>(get("clusters"));
  o.epochs = static_cast<std::int64_t>(get("epochs"));
  o.batch = static_cast<std::int64_t>(get("batch"));
  o.lr = get("lr");
  o.momentum = get("momentum");
  o.weight_decay = get("weight_decay");
  o.iterations = static_cast<std::int64_t>(get("iterations"));
  o.epsilon = get("epsilon");
  o.temperature = get("temperature");
  o.seed = static_cast<std::uint64_t>(get("seed"));
  o.assignment = group.string_attribute("assignment");
  return o;
}

}  // namespace

DataIdentity data_identity(const Dataset& data, const DataSettings& settings) {
  DataIdentity id;
  id.description = data.describe();
  id.images = data.size();
  std::string bytes;
  bytes.reserve(static_cast<std::size_t>(id.images) * 8);
  for (std::int64_t i = 0; i < id.images; ++i) {
    const std::int64_t label = data.label(i);
    bytes.append(reinterpret_cast<const char*>(&label), sizeof label);
  }
  const std::int64_t picks = std::min(kFingerprintImages, id.images);
  for (std::int64_t k = 0; k < picks; ++k) {
    const Image image = data.image(picks > 1 ? k * (id.images - 1) / (picks - 1) : 0);
    bytes.append(reinterpret_cast<const char*>(image.pixels.data()), image.pixels.size());
  }
  id.fingerprint = hex(fnv1a64(bytes));
  id.settings = describe_settings(settings);
  return id;
}

void write_cluster_file(const fs::path& file, const ClusterFile& c) {
  const fs::path tmp = temporary_path(file);
  try {
    {
      h5::File f = h5::File::create(tmp);
      f.set_string_attribute("format", kFormat);
      f.set_string_attribute("source_run", c.source_run);
      f.set_int_attribute("checkpoint_step", c.checkpoint_step);
      f.set_string_attribute("data_description", c.data.description);
      f.set_int_attribute("data_images", c.data.images);
      f.set_string_attribute("data_fingerprint", c.data.fingerprint);
      f.set_string_attribute("data_settings", c.data.settings);
      f.create_float64("centroids", to_vector(c.centroids),
                       {c.centroids.size(0), c.centroids.size(1)});
      {  // every object of the file is closed before the file itself
        h5::Dataset assignment = f.create_int64_series("assignment");
        const at::Tensor a = c.assignment.to(at::kLong).contiguous();
        assignment.append(std::vector<std::int64_t>(a.data_ptr<std::int64_t>(),
                                                    a.data_ptr<std::int64_t>() + a.numel()));
        assignment.close();
        h5::Group options = f.require_group("options");
        write_options(options, c.options);
        options.close();
      }
      f.create_float64("epoch_loss", c.epoch_loss,
                       {static_cast<std::int64_t>(c.epoch_loss.size())});
      f.close_checked();
    }
    commit_file(tmp, file);
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw WriteError(
        write_failure("clustering", file, e, "an earlier clusters file stays as it was"),
        os_error_of(e));
  }
}
ClusterFile read_cluster_file(const fs::path& file) {
  if (!fs::is_regular_file(file))
    throw std::runtime_error(file.string() +
                             ": no such cluster file (make one with 'workbench cluster RUN_DIR')");
  h5::File f = h5::File::open(file, false);
  if (!f.has_attribute("format") || f.string_attribute("format") != kFormat)
    throw std::runtime_error(file.string() + ": not a cluster file of 'workbench cluster'");
  ClusterFile c;
  c.source_run = f.string_attribute("source_run");
  c.checkpoint_step = f.int_attribute("checkpoint_step");
  c.data.description = f.string_attribute("data_description");
  c.data.images = f.int_attribute("data_images");
  c.data.fingerprint = f.string_attribute("data_fingerprint");
  c.data.settings = f.string_attribute("data_settings");
  const h5::Dataset centroids = f.open_dataset("centroids");
  const auto shape = centroids.shape();
  if (shape.size() != 2) throw std::runtime_error(file.string() + ": /centroids is not [m, D]");
  c.centroids = at::tensor(centroids.read_float64(), at::kDouble).view(shape).to(at::kFloat);
  c.assignment = at::tensor(f.open_dataset("assignment").read_int64(), at::kLong);
  c.epoch_loss = f.open_dataset("epoch_loss").read_float64();
  c.options = read_options(f.open_group("options"));
  if (c.assignment.size(0) != c.data.images)
    throw std::runtime_error(file.string() + ": /assignment holds " +
                             std::to_string(c.assignment.size(0)) + " images, the file says " +
                             std::to_string(c.data.images));
  if (c.assignment.numel() > 0 && (c.assignment.min().item<std::int64_t>() < 0 ||
                                   c.assignment.max().item<std::int64_t>() >= c.centroids.size(0)))
    throw std::runtime_error(file.string() + ": /assignment has cluster ids outside 0.." +
                             std::to_string(c.centroids.size(0) - 1));
  return c;
}

bool same_data(const DataIdentity& a, const DataIdentity& b) {
  return a.description == b.description && a.images == b.images && a.fingerprint == b.fingerprint;
}

void check_cluster_identity(const ClusterFile& c, const fs::path& file, const DataIdentity& d) {
  if (same_data(c.data, d)) return;
  throw std::runtime_error(
      file.string() + " clusters another data set: it was made from '" + c.data.description +
      "' (" + std::to_string(c.data.images) + " images, fingerprint " + c.data.fingerprint + "; " +
      c.data.settings + "), but this run trains on '" + d.description + "' (" +
      std::to_string(d.images) + " images, fingerprint " + d.fingerprint + "; " + d.settings + ")");
}

fs::path cluster_file_path(const std::string& setting) {
  const fs::path p(setting);
  std::error_code ec;
  return fs::is_directory(p, ec) ? p / "clusters.h5" : p;
}

ClusterFile load_run_clusters(const DataSettings& settings, const Dataset& train) {
  const fs::path file = cluster_file_path(settings.clusters);
  ClusterFile clusters;
  try {
    clusters = read_cluster_file(file);
    check_cluster_identity(clusters, file, data_identity(train, settings));
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("data.clusters: ") + e.what());
  }
  return clusters;
}

}  // namespace wb
