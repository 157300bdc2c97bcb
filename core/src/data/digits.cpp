// The 8x8 handwritten digits of UCI's "optdigits" as scikit-learn ships them (Debian's
// python3-sklearn: sklearn/datasets/data/digits.csv.gz): one image per line, 64 pixel counts
// 0..16 in row order, then the label 0..9. The file has no train/test split: the project fixes
// one (docs/design.md), every fifth image of each class in file order is a test image.
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/gz_file.h"
#include "data/memory_dataset.h"

namespace wb::data {

namespace {

constexpr int kSide = 8, kPixels = kSide * kSide, kClasses = 10, kMaxCount = 16;
// The real file holds 1797 lines (~260 kB of text): a file that decompresses to far more is
// not this data set, and is refused before it takes much memory.
constexpr std::size_t kMaxText = std::size_t(64) << 20;

[[noreturn]] void fail(const std::string& file, std::size_t line, const std::string& what) {
  throw std::runtime_error(file + ":" + std::to_string(line) + ": " + what);
}

std::string read_text(const std::string& path) {
  GzFile file(path);
  std::string text;
  std::uint8_t buf[1 << 16];
  for (std::size_t got; (got = file.read(buf, sizeof buf)) > 0;) {
    text.append(reinterpret_cast<const char*>(buf), got);
    if (text.size() > kMaxText)
      throw std::runtime_error(path + ": more than 64 MiB of text: not the digits file");
  }
  return text;
}

// One line: 64 pixel counts and a label, each a non-negative integer.
void parse_line(const std::string& path, std::size_t number, const std::string& line,
                std::vector<std::uint8_t>& pixels, std::int64_t& label) {
  std::vector<long> fields;
  const char* p = line.c_str();
  while (true) {
    char* end = nullptr;
    const long v = std::strtol(p, &end, 10);
    if (end == p || v < 0)
      fail(path, number,
           "field " + std::to_string(fields.size() + 1) + " is not a non-negative integer");
    fields.push_back(v);
    p = end;
    if (*p == '\r') ++p;
    if (*p == '\0') break;
    if (*p != ',')
      fail(path, number,
           "unexpected character '" + std::string(1, *p) + "' after field " +
               std::to_string(fields.size()));
    ++p;
  }
  if (fields.size() != kPixels + 1)
    fail(path, number, std::to_string(fields.size()) + " fields, expected 65 (64 pixels, label)");
  for (int i = 0; i < kPixels; ++i) {
    if (fields[i] > kMaxCount)
      fail(path, number,
           "pixel " + std::to_string(i) + " is " + std::to_string(fields[i]) +
               ", counts lie in 0..16");
    // 0..16 to 0..255, rounded
    pixels.push_back(static_cast<std::uint8_t>((fields[i] * 255 + kMaxCount / 2) / kMaxCount));
  }
  if (fields[kPixels] >= kClasses)
    fail(path, number, "label " + std::to_string(fields[kPixels]) + ", digits are 0..9");
  label = fields[kPixels];
}

}  // namespace

Stats digits_stats() {
  // over every pixel of the 1797 images, scaled to [0, 1]
  return {{0.3053}, {0.3759}};
}

std::shared_ptr<const NamedDataset> load_digits(const std::string& file, bool train,
                                                std::string name, std::int64_t image_size) {
  const std::string text = read_text(file);
  std::vector<std::uint8_t> pixels;
  std::vector<std::int64_t> labels;
  std::vector<std::int64_t> seen(kClasses, 0);
  std::size_t number = 0, begin = 0;
  while (begin < text.size()) {
    std::size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    ++number;
    if (line.empty() || line == "\r") continue;
    std::vector<std::uint8_t> image;
    std::int64_t label = 0;
    parse_line(file, number, line, image, label);
    const bool test = seen[label]++ % 5 == 4;
    if (test == train) continue;
    pixels.insert(pixels.end(), image.begin(), image.end());
    labels.push_back(label);
  }
  if (labels.empty())
    throw std::runtime_error(file + ": no " + std::string(train ? "training" : "test") +
                             " images (the file holds " + std::to_string(number) + " lines)");
  return std::make_shared<MemoryDataset>(std::move(name), 1, kSide, kSide, std::move(pixels),
                                         std::move(labels), image_size, digits_stats(), kClasses);
}

}  // namespace wb::data
