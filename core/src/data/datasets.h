// Data set readers (IDX, CIFAR binary, image folders), subset wrappers and the factory that
// builds the data set of a run from its [data] parameters.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/settings.h"
#include "data/subset.h"
#include "workbench/data.h"
#include "workbench/params.h"

namespace wb {

// The data set described by a [data] table (docs/design.md; config/settings.h): dataset, path,
// image_size, num_classes (0 = the format's own), then its subsets in this order: first-N limit,
// class filter (relabel: renumber the kept classes 0..n-1), validation split (Train = train minus
// Val), then label fraction and shots (Train only).
std::shared_ptr<const Dataset> open_dataset(const DataSettings& data, Split split);
// The same for a table built by hand: keys it lacks take the schema's defaults.
std::shared_ptr<const Dataset> open_dataset(const Params& data, Split split);

}  // namespace wb

namespace wb::data {

struct Stats {
  std::vector<double> mean, std;
};
Stats fashion_mnist_stats();
Stats cifar10_stats();
Stats cifar100_stats();
Stats imagenet_stats();
Stats digits_stats();

// Every dataset yields square images: `image_size` > 0 resizes them (shorter side, then the
// central square) when an item is read; 0 keeps the native size.

// IDX files (gzip or raw): images idx3 of unsigned bytes [N, H, W], labels idx1 [N]. Every
// label must be < num_classes; num_classes 0 infers it (the largest label + 1) and refuses
// labels that leave most of the inferred classes empty.
std::shared_ptr<const NamedDataset> load_idx(const std::string& images_file,
                                             const std::string& labels_file, std::string name,
                                             std::int64_t image_size, Stats stats,
                                             std::int64_t num_classes = 0);

// CIFAR binary batches: 1 label byte (CIFAR-10) or coarse + fine label bytes (CIFAR-100,
// the fine label is used) followed by 3072 bytes of planar 32x32 RGB. Labels are checked
// (< 10, or < 20 coarse and < 100 fine).
std::shared_ptr<const NamedDataset> load_cifar(const std::vector<std::string>& files, bool cifar100,
                                               std::string name, std::int64_t image_size,
                                               Stats stats);

// The 8x8 handwritten digits file of scikit-learn (digits.csv.gz, gzip or plain text: one
// image per line, 64 counts 0..16 then the label 0..9; counts scaled to 0..255). The split is
// the project's: every fifth image of each class, in file order, is a test image (355 of 1797).
// Errors name the file and the line.
std::shared_ptr<const NamedDataset> load_digits(const std::string& file, bool train,
                                                std::string name, std::int64_t image_size);

// root/<class>/*.jpg|jpeg|png, classes sorted by name; a class folder without images is an
// error. `classes` given (a test split: the training folder's classes): labels follow that
// list, a folder outside it is an error, an absent or empty one is allowed. image_size 0 =
// native: the shorter side of the first image, which every image must share.
std::vector<std::string> folder_classes(const std::string& root);  // sorted subfolder names
std::shared_ptr<const NamedDataset> open_folder(const std::string& root, std::string name,
                                                std::int64_t image_size,
                                                std::vector<std::string> classes = {});

// Subsets (data::subset and data::relabelled_subset are in data/subset.h). Each keeps the base's
// item order; seeds make them reproducible.
std::shared_ptr<const Dataset> first_n(std::shared_ptr<const Dataset> base, std::int64_t n);
// Per class round(fraction x count), at least 1.
std::shared_ptr<const Dataset> label_fraction(std::shared_ptr<const Dataset> base, double fraction,
                                              std::uint64_t seed);
// min(k, count) per class.
std::shared_ptr<const Dataset> k_shots(std::shared_ptr<const Dataset> base, std::int64_t k,
                                       std::uint64_t seed);
// Keeps the listed classes; relabel: class classes[i] becomes label i.
std::shared_ptr<const Dataset> filter_classes(std::shared_ptr<const Dataset> base,
                                              const std::vector<std::int64_t>& classes,
                                              bool relabel);

// Class-balanced validation split: per class round(fraction x count), at least 1 when
// fraction > 0, and never the whole class when it has 2 or more items.
struct TrainVal {
  std::shared_ptr<const Dataset> train, val;
};
TrainVal split_validation(std::shared_ptr<const Dataset> base, double fraction, std::uint64_t seed);

std::vector<std::int64_t> all_labels(const Dataset& data);

}  // namespace wb::data
