// Shared fixtures of the data, views and loader tests: a synthetic in-memory data set (and the
// temporary directory of fixture_temp_dir.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "fixture_temp_dir.h"  // TempDir, which the data tests share
#include "workbench/data.h"

namespace wbtest {

// Items with a known label per index and a pattern that differs between items and pixels.
class SyntheticDataset : public wb::Dataset {
 public:
  SyntheticDataset(std::vector<std::int64_t> labels, std::int64_t channels, std::int64_t side,
                   std::int64_t throw_at = -1)
      : labels_(std::move(labels)), channels_(channels), side_(side), throw_at_(throw_at) {
    for (auto l : labels_) classes_ = std::max(classes_, l + 1);
  }
  std::int64_t size() const override { return static_cast<std::int64_t>(labels_.size()); }
  std::int64_t classes() const override { return classes_; }
  std::int64_t channels() const override { return channels_; }
  std::int64_t image_size() const override { return side_; }
  wb::Image image(std::int64_t i) const override {
    if (i == throw_at_)
      throw std::runtime_error("synthetic item " + std::to_string(i) + " is broken");
    wb::Image img;
    img.channels = channels_;
    img.height = img.width = side_;
    img.pixels.resize(channels_ * side_ * side_);
    for (std::size_t p = 0; p < img.pixels.size(); ++p)
      img.pixels[p] = static_cast<std::uint8_t>(
          (p * 37 + static_cast<std::size_t>(i) * 101 + (p / 7) * (p % 5)) % 251);
    // The first two bytes name the item, so tests can tell which item a subset holds.
    img.pixels[0] = static_cast<std::uint8_t>(i % 256);
    img.pixels[1] = static_cast<std::uint8_t>(i / 256);
    return img;
  }
  std::int64_t label(std::int64_t i) const override { return labels_.at(i); }
  std::string describe() const override { return "synthetic"; }

 private:
  std::vector<std::int64_t> labels_;
  std::int64_t channels_, side_, classes_ = 0, throw_at_;
};

// Labels 0..classes-1 where class c has counts[c] items, interleaved.
inline std::vector<std::int64_t> labels_with_counts(const std::vector<std::int64_t>& counts) {
  std::vector<std::int64_t> labels;
  std::vector<std::int64_t> left = counts;
  bool any = true;
  while (any) {
    any = false;
    for (std::size_t c = 0; c < left.size(); ++c)
      if (left[c] > 0) {
        labels.push_back(static_cast<std::int64_t>(c));
        --left[c];
        any = true;
      }
  }
  return labels;
}

// Which base item a subset's item is (see SyntheticDataset::image).
inline std::int64_t item_id(const wb::Dataset& data, std::int64_t i) {
  const wb::Image img = data.image(i);
  return img.pixels[0] + 256 * img.pixels[1];
}

}  // namespace wbtest
