// Split names, named data sets and subsets (data/subset.h, workbench/data.h).
#include "data/subset.h"

#include <stdexcept>

namespace wb {

const char* split_name(Split split) {
  switch (split) {
    case Split::Train:
      return "train";
    case Split::Val:
      return "val";
    case Split::Test:
      return "test";
  }
  return "?";
}

Split split_named(const std::string& name) {
  for (Split s : {Split::Train, Split::Val, Split::Test})
    if (name == split_name(s)) return s;
  throw std::invalid_argument("unknown split '" + name + "' (train, val or test)");
}

}  // namespace wb

namespace wb::data {

namespace {

// Indices into a base data set, with an optional label map.
class SubsetDataset : public NamedDataset {
 public:
  SubsetDataset(std::shared_ptr<const Dataset> base, std::vector<std::int64_t> indices,
                std::string name, std::vector<std::int64_t> label_map = {},
                std::vector<std::string> class_names = {})
      : base_(std::move(base)),
        indices_(std::move(indices)),
        name_(std::move(name)),
        label_map_(std::move(label_map)),
        names_(std::move(class_names)) {}

  std::int64_t size() const override { return static_cast<std::int64_t>(indices_.size()); }
  std::int64_t classes() const override {
    return label_map_.empty() ? base_->classes() : static_cast<std::int64_t>(names_.size());
  }
  std::int64_t channels() const override { return base_->channels(); }
  std::int64_t image_size() const override { return base_->image_size(); }
  Image image(std::int64_t i) const override { return base_->image(at(i)); }
  std::int64_t label(std::int64_t i) const override {
    const std::int64_t l = base_->label(at(i));
    return label_map_.empty() ? l : label_map_[static_cast<std::size_t>(l)];
  }
  std::string name() const override { return name_; }
  std::vector<std::string> class_names() const override {
    if (!label_map_.empty()) return names_;
    if (auto* named = dynamic_cast<const NamedDataset*>(base_.get())) return named->class_names();
    return NamedDataset::class_names();
  }
  std::vector<double> pixel_mean() const override { return base_->pixel_mean(); }
  std::vector<double> pixel_std() const override { return base_->pixel_std(); }
  bool has_clusters() const override { return base_->has_clusters(); }
  std::int64_t cluster(std::int64_t i) const override { return base_->cluster(at(i)); }

 private:
  std::int64_t at(std::int64_t i) const {
    if (i < 0 || i >= size())
      throw std::out_of_range(name_ + ": item " + std::to_string(i) + " of " +
                              std::to_string(size()));
    return indices_[static_cast<std::size_t>(i)];
  }

  std::shared_ptr<const Dataset> base_;
  std::vector<std::int64_t> indices_;
  std::string name_;
  std::vector<std::int64_t> label_map_;  // base label -> label, -1 for dropped classes
  std::vector<std::string> names_;
};

}  // namespace

std::vector<std::string> NamedDataset::class_names() const {
  std::vector<std::string> names;
  for (std::int64_t c = 0; c < classes(); ++c) names.push_back(std::to_string(c));
  return names;
}

std::string NamedDataset::describe() const {
  return name() + " (" + std::to_string(size()) + " images, " + std::to_string(classes()) +
         " classes)";
}

std::string name_of(const Dataset& data) {
  if (auto* named = dynamic_cast<const NamedDataset*>(&data)) return named->name();
  return data.describe();
}

std::shared_ptr<const Dataset> subset(std::shared_ptr<const Dataset> base,
                                      std::vector<std::int64_t> indices, const std::string& what) {
  std::string name = name_of(*base) + ", " + what;
  return std::make_shared<SubsetDataset>(std::move(base), std::move(indices), std::move(name));
}

std::shared_ptr<const Dataset> relabelled_subset(std::shared_ptr<const Dataset> base,
                                                 std::vector<std::int64_t> indices,
                                                 std::string name,
                                                 std::vector<std::int64_t> label_map,
                                                 std::vector<std::string> class_names) {
  return std::make_shared<SubsetDataset>(std::move(base), std::move(indices), std::move(name),
                                         std::move(label_map), std::move(class_names));
}

}  // namespace wb::data
