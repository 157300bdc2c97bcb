// Named data sets and subsets of them, shared by the SDK (wb::subset of eval_tools.h) and the
// host's data-set readers and subset rules (core/src/data).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "workbench/data.h"

namespace wb::data {

// Our data sets know a short name ("fashion_mnist train, 10% labels") and their classes' names.
class NamedDataset : public Dataset {
 public:
  virtual std::string name() const = 0;
  virtual std::vector<std::string> class_names() const;  // default "0", "1", ...
  std::string describe() const override;                 // name + " (N images, K classes)"
};

std::string name_of(const Dataset& data);  // name() when it is a NamedDataset, else describe()

// The items `indices` of `base`, in that order, named "<base name>, <what>".
std::shared_ptr<const Dataset> subset(std::shared_ptr<const Dataset> base,
                                      std::vector<std::int64_t> indices, const std::string& what);

// The same with the labels mapped: base label l becomes label_map[l] (>= 0 for every item
// kept), and the classes are named `class_names` (label_map's targets 0..n-1). `name` is the
// whole name.
std::shared_ptr<const Dataset> relabelled_subset(std::shared_ptr<const Dataset> base,
                                                 std::vector<std::int64_t> indices,
                                                 std::string name,
                                                 std::vector<std::int64_t> label_map,
                                                 std::vector<std::string> class_names);

}  // namespace wb::data
