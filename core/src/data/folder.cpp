// Image folder trees: root/<class>/*.jpg|jpeg|png, classes sorted by name.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <stdexcept>

#include "data/codec.h"
#include "data/datasets.h"
#include "data/image_ops.h"

namespace wb::data {

namespace {

namespace fs = std::filesystem;

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

// Items are decoded when they are read, not cached: a folder may hold far more pixels than
// memory (ImageNet: ~100 GB decoded), the loader's workers decode in parallel ahead of the
// trainer, and the OS page cache already keeps the compressed files of small folders hot.
// The JPEG decoder's DCT scaling makes large photos cheap to bring down to image_size.
class FolderDataset : public NamedDataset {
 public:
  FolderDataset(const std::string& root, std::string name, std::int64_t image_size)
      : name_(std::move(name)), image_size_(image_size > 0 ? image_size : 224) {
    std::error_code ec;
    if (!fs::is_directory(root, ec))
      throw std::runtime_error(root + ": not a directory (expected <root>/<class>/*.jpg)");
    for (const auto& entry : fs::directory_iterator(root))
      if (entry.is_directory()) classes_.push_back(entry.path().filename().string());
    std::sort(classes_.begin(), classes_.end());
    for (std::size_t c = 0; c < classes_.size(); ++c) {
      std::vector<std::string> files;
      for (const auto& entry : fs::directory_iterator(fs::path(root) / classes_[c]))
        if (entry.is_regular_file() && is_image_name(entry.path()))
          files.push_back(entry.path().string());
      std::sort(files.begin(), files.end());
      for (auto& f : files) {
        files_.push_back(std::move(f));
        labels_.push_back(static_cast<std::int64_t>(c));
      }
    }
    if (files_.empty())
      throw std::runtime_error(root +
                               ": no .jpg/.jpeg/.png files in class folders <root>/<class>/");
  }

  std::int64_t size() const override { return static_cast<std::int64_t>(files_.size()); }
  std::int64_t classes() const override { return static_cast<std::int64_t>(classes_.size()); }
  std::int64_t channels() const override { return 3; }
  std::int64_t image_size() const override { return image_size_; }
  Image image(std::int64_t i) const override {
    check(i);
    return resize_center_square(decode_image_file(files_[i], image_size_), image_size_);
  }
  std::int64_t label(std::int64_t i) const override {
    check(i);
    return labels_[i];
  }
  std::string name() const override { return name_; }
  std::vector<std::string> class_names() const override { return classes_; }
  std::vector<double> pixel_mean() const override { return imagenet_stats().mean; }
  std::vector<double> pixel_std() const override { return imagenet_stats().std; }

 private:
  void check(std::int64_t i) const {
    if (i < 0 || i >= size())
      throw std::out_of_range(name_ + ": item " + std::to_string(i) + " of " +
                              std::to_string(size()));
  }

  std::string name_;
  std::int64_t image_size_;
  std::vector<std::string> classes_, files_;
  std::vector<std::int64_t> labels_;
};

}  // namespace

std::shared_ptr<const NamedDataset> open_folder(const std::string& root, std::string name,
                                                std::int64_t image_size) {
  return std::make_shared<FolderDataset>(root, std::move(name), image_size);
}

}  // namespace wb::data
