// CIFAR-10 / CIFAR-100 binary batches.
#include <stdexcept>

#include "data/codec.h"
#include "data/memory_dataset.h"

namespace wb::data {

namespace {

// A label byte of record r at `offset` in `file`, checked against the class count.
std::int64_t checked_label(const std::string& file, std::size_t r, std::size_t offset,
                           std::uint8_t label, std::int64_t classes, const char* which) {
  if (label >= classes)
    throw std::runtime_error(file + ": record " + std::to_string(r) + " (byte offset " +
                             std::to_string(offset) + ") has " + which + " " +
                             std::to_string(label) + ", expected < " + std::to_string(classes));
  return label;
}

}  // namespace

std::shared_ptr<const NamedDataset> load_cifar(const std::vector<std::string>& files, bool cifar100,
                                               std::string name, std::int64_t image_size,
                                               Stats stats) {
  constexpr std::int64_t side = 32, plane = side * side;
  const std::size_t label_bytes = cifar100 ? 2 : 1;
  const std::size_t record = label_bytes + 3 * plane;
  const std::int64_t classes = cifar100 ? 100 : 10;
  const std::string format = cifar100 ? "CIFAR-100" : "CIFAR-10";
  std::vector<std::uint8_t> pixels;
  std::vector<std::int64_t> labels;
  for (const auto& file : files) {
    const std::vector<std::uint8_t> bytes = read_file(file);
    if (bytes.empty()) throw std::runtime_error(file + ": empty file, not a " + format + " batch");
    if (bytes.size() % record != 0)
      throw std::runtime_error(
          file + ": truncated or not a " + format + " batch: " + std::to_string(bytes.size()) +
          " bytes is not a whole number of " + std::to_string(record) + "-byte records");
    const std::size_t n = bytes.size() / record;
    const std::size_t first = labels.size();
    pixels.resize((first + n) * 3 * plane);
    for (std::size_t r = 0; r < n; ++r) {
      const std::size_t at = r * record;
      const std::uint8_t* rec = &bytes[at];
      // CIFAR-100: coarse (20 superclasses), then the fine label, which is the one used.
      if (cifar100) checked_label(file, r, at, rec[0], 20, "coarse label");
      labels.push_back(checked_label(file, r, at + label_bytes - 1, rec[label_bytes - 1], classes,
                                     cifar100 ? "fine label" : "label"));
      // Planar RGB -> interleaved HWC.
      const std::uint8_t* planes = rec + label_bytes;
      std::uint8_t* out = &pixels[(first + r) * 3 * plane];
      for (std::int64_t i = 0; i < plane; ++i)
        for (std::int64_t c = 0; c < 3; ++c) out[i * 3 + c] = planes[c * plane + i];
    }
  }
  return std::make_shared<MemoryDataset>(std::move(name), 3, side, side, std::move(pixels),
                                         std::move(labels), image_size, std::move(stats), classes);
}

}  // namespace wb::data
