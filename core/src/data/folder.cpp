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

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

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
// image_size 0 keeps the native size, as for every data set: the shorter side of the first
// image (in sorted order), which every image must then share (checked as it is read).
class FolderDataset : public NamedDataset {
 public:
  FolderDataset(const std::string& root, std::string name, std::int64_t image_size,
                std::vector<std::string> classes)
      : name_(std::move(name)),
        image_size_(image_size),
        native_(image_size == 0),
        classes_(std::move(classes)) {
    std::error_code ec;
    const bool given = !classes_.empty();
    if (!given) {
      classes_ = folder_classes(root);
    } else {
      for (const auto& folder : folder_classes(root))
        if (std::find(classes_.begin(), classes_.end(), folder) == classes_.end())
          throw std::runtime_error((fs::path(root) / folder).string() +
                                   ": a class the training folder does not have; its labels "
                                   "would not match (training classes: " +
                                   join_names(classes_) + ")");
    }
    for (std::size_t c = 0; c < classes_.size(); ++c) {
      const fs::path dir = fs::path(root) / classes_[c];
      std::vector<std::string> files;
      if (fs::is_directory(dir, ec))
        for (const auto& entry : fs::directory_iterator(dir))
          if (entry.is_regular_file() && is_image_name(entry.path()))
            files.push_back(entry.path().string());
      // As torchvision's ImageFolder: an empty class of the training set is a mistake (it
      // would still count as a class); a test split may lack some.
      if (files.empty() && !given)
        throw std::runtime_error(dir.string() +
                                 ": class folder without .jpg/.jpeg/.png images; remove it or "
                                 "add its images");
      std::sort(files.begin(), files.end());
      for (auto& f : files) {
        files_.push_back(std::move(f));
        labels_.push_back(static_cast<std::int64_t>(c));
      }
    }
    if (files_.empty())
      throw std::runtime_error(root +
                               ": no .jpg/.jpeg/.png files in class folders <root>/<class>/");
    if (image_size_ == 0) {
      const Image first = decode_image_file(files_[0]);
      image_size_ = std::min(first.height, first.width);
    }
  }

  std::int64_t size() const override { return static_cast<std::int64_t>(files_.size()); }
  std::int64_t classes() const override { return static_cast<std::int64_t>(classes_.size()); }
  std::int64_t channels() const override { return 3; }
  std::int64_t image_size() const override { return image_size_; }
  Image image(std::int64_t i) const override {
    check(i);
    if (!native_)
      return resize_center_square(decode_image_file(files_[i], image_size_), image_size_);
    const Image img = decode_image_file(files_[i]);
    if (std::min(img.height, img.width) != image_size_)
      throw std::runtime_error(
          files_[i] + ": " + std::to_string(img.width) + " x " + std::to_string(img.height) +
          " pixels, but with data.image_size = 0 (native size) every image must have the "
          "shorter side of the first, " +
          files_[0] + ": " + std::to_string(image_size_) +
          " px; set data.image_size to resize them all");
    return resize_center_square(img, image_size_);
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
  bool native_;  // image_size 0: keep (and check) the native size
  std::vector<std::string> classes_, files_;
  std::vector<std::int64_t> labels_;
};

}  // namespace

std::vector<std::string> folder_classes(const std::string& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec))
    throw std::runtime_error(root + ": not a directory (expected <root>/<class>/*.jpg)");
  std::vector<std::string> classes;
  for (const auto& entry : fs::directory_iterator(root))
    if (entry.is_directory()) classes.push_back(entry.path().filename().string());
  std::sort(classes.begin(), classes.end());
  return classes;
}

std::shared_ptr<const NamedDataset> open_folder(const std::string& root, std::string name,
                                                std::int64_t image_size,
                                                std::vector<std::string> classes) {
  return std::make_shared<FolderDataset>(root, std::move(name), image_size, std::move(classes));
}

}  // namespace wb::data
