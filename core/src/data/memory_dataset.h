// A data set held in memory as N equally sized 8-bit HWC images (IDX and CIFAR readers).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/datasets.h"

namespace wb::data {

class MemoryDataset : public NamedDataset {
 public:
  // pixels: N x height x width x channels; image_size 0 = native (the central square of
  // non-square images). classes: the class count the reader established (labels lie below
  // it); 0 = the largest label + 1.
  MemoryDataset(std::string name, std::int64_t channels, std::int64_t height, std::int64_t width,
                std::vector<std::uint8_t> pixels, std::vector<std::int64_t> labels,
                std::int64_t image_size, Stats stats, std::int64_t classes = 0);

  std::int64_t size() const override { return static_cast<std::int64_t>(labels_.size()); }
  std::int64_t classes() const override { return classes_; }
  std::int64_t channels() const override { return channels_; }
  std::int64_t image_size() const override { return image_size_; }
  Image image(std::int64_t i) const override;
  std::int64_t label(std::int64_t i) const override;
  std::string name() const override { return name_; }
  std::vector<double> pixel_mean() const override { return stats_.mean; }
  std::vector<double> pixel_std() const override { return stats_.std; }

 private:
  std::string name_;
  std::int64_t channels_, height_, width_, image_size_, classes_ = 0;
  std::vector<std::uint8_t> pixels_;
  std::vector<std::int64_t> labels_;
  Stats stats_;
};

}  // namespace wb::data
