// open_dataset: the data set of a run from its [data] parameters (docs/design.md).
#include <filesystem>
#include <stdexcept>

#include "data/datasets.h"

namespace wb {

namespace {

namespace fs = std::filesystem;
using data::NamedDataset;

// The IDX files of one split, gzip preferred: <dir>/<prefix>-images-idx3-ubyte[.gz].
std::string idx_file(const std::string& dir, const std::string& prefix, const char* kind) {
  const fs::path base = fs::path(dir) / (prefix + "-" + kind + "-ubyte");
  const fs::path gz = base.string() + ".gz";
  return fs::exists(gz) || !fs::exists(base) ? gz.string() : base.string();
}

// Formats that declare their class count: data.num_classes, when set, must agree with it.
std::int64_t declared_classes(const std::string& kind, std::int64_t declared,
                              std::int64_t num_classes) {
  if (num_classes > 0 && num_classes != declared)
    throw std::invalid_argument("data.num_classes = " + std::to_string(num_classes) + ", but " +
                                kind + " has " + std::to_string(declared) + " classes");
  return declared;
}

std::shared_ptr<const NamedDataset> load_base(const std::string& kind, std::string path, bool train,
                                              std::int64_t image_size, std::int64_t num_classes) {
  const std::string split = train ? "train" : "test";
  if (kind == "fashion_mnist" || kind == "idx") {
    if (path.empty()) {
      if (kind == "idx") throw std::invalid_argument("data.path must name the IDX folder");
      path = "/usr/share/datasets/fashion-mnist";
    }
    const std::string prefix = train ? "train" : "t10k";
    const bool fashion = kind == "fashion_mnist";
    const data::Stats stats = fashion ? data::fashion_mnist_stats() : data::Stats{};
    return data::load_idx(idx_file(path, prefix, "images-idx3"),
                          idx_file(path, prefix, "labels-idx1"), kind + " " + split, image_size,
                          stats, fashion ? declared_classes(kind, 10, num_classes) : num_classes);
  }
  if (kind == "cifar10" || kind == "cifar100") {
    if (path.empty())
      throw std::invalid_argument("data.path must name the folder of the " + kind +
                                  " binary batches");
    const bool c100 = kind == "cifar100";
    declared_classes(kind, c100 ? 100 : 10, num_classes);
    std::vector<std::string> files;
    if (c100) {
      files.push_back((fs::path(path) / (train ? "train.bin" : "test.bin")).string());
    } else if (train) {
      for (int b = 1; b <= 5; ++b)
        files.push_back((fs::path(path) / ("data_batch_" + std::to_string(b) + ".bin")).string());
    } else {
      files.push_back((fs::path(path) / "test_batch.bin").string());
    }
    return data::load_cifar(files, c100, kind + " " + split, image_size,
                            c100 ? data::cifar100_stats() : data::cifar10_stats());
  }
  if (kind == "digits") {
    declared_classes(kind, 10, num_classes);
    if (path.empty()) path = "/usr/lib/python3/dist-packages/sklearn/datasets/data";
    if (fs::is_directory(path)) path = (fs::path(path) / "digits.csv.gz").string();
    return data::load_digits(path, train, kind + " " + split, image_size);
  }
  if (kind == "folder") {
    if (path.empty()) throw std::invalid_argument("data.path must name the image folder");
    // root/train + root/test (or root/val) when present, else root is the training set. The
    // test split takes the training folder's classes, so that a class missing from test/
    // does not shift the labels of the others.
    std::string dir = path;
    std::vector<std::string> classes;
    if (fs::is_directory(fs::path(path) / "train")) {
      if (train) {
        dir = (fs::path(path) / "train").string();
      } else {
        classes = data::folder_classes((fs::path(path) / "train").string());
        dir = (fs::path(path) / "test").string();
        if (!fs::is_directory(dir)) dir = (fs::path(path) / "val").string();
      }
    } else if (!train) {
      throw std::invalid_argument(path +
                                  ": no train/ and test/ (or val/) folders, so no test split");
    }
    if (!fs::is_directory(dir)) throw std::invalid_argument(dir + ": no such folder");
    auto folder =
        data::open_folder(dir, "folder " + fs::path(path).filename().string() + " " + split,
                          image_size, std::move(classes));
    declared_classes(dir, folder->classes(), num_classes);
    return folder;
  }
  throw std::invalid_argument("data.dataset: unknown data set '" + kind +
                              "' (valid: fashion_mnist, idx, cifar10, cifar100, digits, folder)");
}

}  // namespace

std::shared_ptr<const Dataset> open_dataset(const DataSettings& p, Split split) {
  if (p.image_size < 0) throw std::invalid_argument("data.image_size must be >= 0");
  if (p.num_classes < 0) throw std::invalid_argument("data.num_classes must be >= 0");
  const bool train = split != Split::Test;
  std::shared_ptr<const Dataset> d =
      load_base(p.dataset, p.path, train, p.image_size, p.num_classes);

  d = data::first_n(d, train ? p.train_limit : p.test_limit);
  if (!p.classes.empty()) d = data::filter_classes(d, p.classes, p.relabel);
  if (split == Split::Test) return d;

  if (p.val_fraction > 0.0) {
    data::TrainVal tv = data::split_validation(d, p.val_fraction, p.subset_seed);
    if (split == Split::Val) return tv.val;
    d = tv.train;
  } else if (split == Split::Val) {
    throw std::invalid_argument(
        "no validation split: data.val_fraction is 0 (set it to carve one from train)");
  }
  if (p.label_fraction < 1.0) d = data::label_fraction(d, p.label_fraction, p.subset_seed);
  if (p.shots > 0) d = data::k_shots(d, p.shots, p.subset_seed);
  return d;
}

std::shared_ptr<const Dataset> open_dataset(const Params& data, Split split) {
  return open_dataset(data_settings(data), split);
}

}  // namespace wb
