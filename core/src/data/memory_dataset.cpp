// In-memory data set (see memory_dataset.h) and the normalisation statistics of the known data
// sets.
#include "data/memory_dataset.h"

#include <algorithm>
#include <stdexcept>

#include "data/image_ops.h"

namespace wb::data {

// Fashion-MNIST: mean and std of the training pixels. CIFAR: per-channel statistics of the
// training set; folders: the ImageNet statistics everyone uses.
Stats fashion_mnist_stats() {
  return {{0.2860}, {0.3530}};
}
Stats cifar10_stats() {
  return {{0.4914, 0.4822, 0.4465}, {0.2470, 0.2435, 0.2616}};
}
Stats cifar100_stats() {
  return {{0.5071, 0.4865, 0.4409}, {0.2673, 0.2564, 0.2762}};
}
Stats imagenet_stats() {
  return {{0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}};
}

MemoryDataset::MemoryDataset(std::string name, std::int64_t channels, std::int64_t height,
                             std::int64_t width, std::vector<std::uint8_t> pixels,
                             std::vector<std::int64_t> labels, std::int64_t image_size, Stats stats,
                             std::int64_t classes)
    : name_(std::move(name)),
      channels_(channels),
      height_(height),
      width_(width),
      image_size_(image_size > 0 ? image_size : std::min(height, width)),
      classes_(classes),
      pixels_(std::move(pixels)),
      labels_(std::move(labels)),
      stats_(std::move(stats)) {
  if (static_cast<std::int64_t>(pixels_.size()) != size() * channels * height * width)
    throw std::logic_error(name_ + ": pixel buffer does not match " + std::to_string(size()) +
                           " images");
  for (auto l : labels_) {
    if (l < 0 || (classes > 0 && l >= classes))
      throw std::logic_error(name_ + ": label " + std::to_string(l) + " outside the " +
                             std::to_string(classes) + " classes");  // readers check first
    if (classes == 0) classes_ = std::max(classes_, l + 1);
  }
  if (stats_.mean.empty()) stats_.mean.assign(channels, 0.5);
  if (stats_.std.empty()) stats_.std.assign(channels, 0.5);
}

Image MemoryDataset::image(std::int64_t i) const {
  if (i < 0 || i >= size())
    throw std::out_of_range(name_ + ": image " + std::to_string(i) + " of " +
                            std::to_string(size()));
  // Resizing per item rather than once on load: it costs microseconds on these small
  // images and keeps one copy of the data whatever image_size the runs ask for.
  Image img;
  img.channels = channels_;
  img.height = height_;
  img.width = width_;
  const std::int64_t n = channels_ * height_ * width_;
  img.pixels.assign(pixels_.begin() + i * n, pixels_.begin() + (i + 1) * n);
  if (height_ == width_ && height_ == image_size_) return img;
  return resize_center_square(img, image_size_);
}

std::int64_t MemoryDataset::label(std::int64_t i) const {
  if (i < 0 || i >= size())
    throw std::out_of_range(name_ + ": label " + std::to_string(i) + " of " +
                            std::to_string(size()));
  return labels_[i];
}

}  // namespace wb::data
