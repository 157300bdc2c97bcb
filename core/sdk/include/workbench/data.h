// Data sets and augmented views as the SDK sees them: evaluators and tools read images through
// these without knowing the file format.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace wb {

// An 8-bit image, channels interleaved (HWC), as decoded from disk.
struct Image {
  std::int64_t channels = 0, height = 0, width = 0;
  std::vector<std::uint8_t> pixels;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual std::int64_t size() const = 0;
  virtual std::int64_t classes() const = 0;
  virtual std::int64_t channels() const = 0;
  virtual std::int64_t image_size() const = 0;    // side of the square images it yields
  virtual Image image(std::int64_t i) const = 0;  // thread-safe
  virtual std::int64_t label(std::int64_t i) const = 0;
  virtual std::string describe() const = 0;  // "fashion_mnist train (60000 images, 10 classes)"

  // Per-channel mean and standard deviation of the pixel values scaled to [0, 1], used to
  // normalise views whose recipe leaves mean/std empty. Data sets with known statistics
  // override these; the default is 0.5 / 0.5 for every channel.
  virtual std::vector<double> pixel_mean() const {
    return std::vector<double>(static_cast<std::size_t>(channels()), 0.5);
  }
  virtual std::vector<double> pixel_std() const {
    return std::vector<double>(static_cast<std::size_t>(channels()), 0.5);
  }

  // MoCE (docs/moce.md): whether every item has a cluster id, and item i's. The host gives them
  // to the data sets that the evaluators of a cluster-gated run read; a Loader over such a set
  // (or a subset of it) puts them into Batch::cluster. The default: no cluster ids (-1).
  virtual bool has_clusters() const { return false; }
  virtual std::int64_t cluster(std::int64_t i) const {
    (void)i;
    return -1;
  }
};

enum class Split { Train, Val, Test };
const char* split_name(Split split);         // "train", "val", "test"
Split split_named(const std::string& name);  // the inverse; throws on another name

}  // namespace wb
