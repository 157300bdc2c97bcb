// IDX files (the MNIST format), gzip-compressed or raw (data/gz_file.h reads both). Nothing is
// allocated on the word of a header: sizes are multiplied with overflow checks, a raw file's
// size is checked before its data is read, and a gzip file's buffer grows only as data
// actually decompresses.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "data/gz_file.h"
#include "data/memory_dataset.h"

namespace wb::data {

namespace {

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw std::runtime_error(file + ": " + what);
}

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::uint32_t big_endian(const std::uint8_t* b) {
  return (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) | (std::uint32_t(b[2]) << 8) |
         b[3];
}

// The header of an IDX file of unsigned bytes: dimensions and the size of the data they announce.
struct IdxHeader {
  std::vector<std::uint64_t> dims;
  std::uint64_t bytes = 1;  // product of dims
  std::uint64_t header_bytes = 0;
  std::string shape;  // "60000 x 28 x 28"
};

IdxHeader read_header(GzFile& file, int ndim, const char* kind) {
  const std::string& path = file.path();
  std::uint8_t head[4];
  if (file.read(head, 4) != 4) fail(path, "truncated: shorter than the 4-byte IDX header");
  const std::uint32_t magic = big_endian(head);
  const std::uint32_t expected = 0x0800u | static_cast<std::uint32_t>(ndim);
  if (magic != expected) {
    std::string why;
    if (head[0] != 0 || head[1] != 0)
      why = "not an IDX file";
    else if (head[2] != 0x08)
      why = "element type " + hex32(head[2]).substr(8) + ", only unsigned bytes (08) are read";
    else
      why = std::to_string(head[3]) + " dimensions, expected " + std::to_string(ndim);
    fail(path, "wrong magic number " + hex32(magic) + " (expected " + hex32(expected) + ": " +
                   kind + "): " + why);
  }
  IdxHeader h;
  h.header_bytes = 4 + 4 * static_cast<std::uint64_t>(ndim);
  for (int d = 0; d < ndim; ++d) {
    std::uint8_t b[4];
    if (file.read(b, 4) != 4) fail(path, "truncated: the header ends inside the dimensions");
    const std::uint64_t n = big_endian(b);
    h.dims.push_back(n);
    h.shape += (d ? " x " : "") + std::to_string(n);
    if (__builtin_mul_overflow(h.bytes, n, &h.bytes))
      fail(path, "the header announces " + std::to_string(ndim) + " dimensions " + h.shape +
                     "..., whose product overflows 64 bits: not a real file");
  }
  return h;
}

[[noreturn]] void size_mismatch(const std::string& path, const IdxHeader& h,
                                const std::string& holds) {
  fail(path, "truncated: the header announces " + h.shape + " = " + std::to_string(h.bytes) +
                 " bytes of data, the file holds " + holds);
}

// The data after the header. A raw file is checked against its size first; a gzip file is
// read in growing chunks, so a lying header costs at most twice what the file really holds
// (plus 1 MB).
std::vector<std::uint8_t> read_data(GzFile& file, const IdxHeader& h) {
  const std::string& path = file.path();
  std::vector<std::uint8_t> data;
  if (file.raw()) {
    std::error_code ec;
    const std::uint64_t size = std::filesystem::file_size(path, ec);
    if (ec) fail(path, "cannot read its size: " + ec.message());
    const std::uint64_t held = size > h.header_bytes ? size - h.header_bytes : 0;
    if (held < h.bytes) size_mismatch(path, h, std::to_string(held));
    if (held > h.bytes)
      fail(path, "the header announces " + h.shape + " = " + std::to_string(h.bytes) +
                     " bytes of data, the file holds " + std::to_string(held) +
                     ": the header or the file is wrong");
    data.resize(h.bytes);
    const std::size_t got = file.read(data.data(), data.size());
    if (got != data.size()) size_mismatch(path, h, std::to_string(got) + " (it shrank?)");
    return data;
  }
  std::size_t done = 0;
  while (done < h.bytes) {
    const std::size_t target = static_cast<std::size_t>(
        std::min<std::uint64_t>(h.bytes, std::max(2 * done, done + (1u << 20))));
    data.reserve(target);  // exactly target: resize alone may double the capacity
    data.resize(target);
    const std::size_t got = file.read(data.data() + done, target - done);
    done += got;
    if (done < target) size_mismatch(path, h, std::to_string(done) + " after decompression");
  }
  std::uint8_t extra;
  if (file.read(&extra, 1) != 0)
    fail(path, "the header announces " + h.shape + " = " + std::to_string(h.bytes) +
                   " bytes of data, the file holds more: the header or the file is wrong");
  return data;
}

// Labels must lie below the class count the data set declares. Where none is declared it is
// inferred as the largest label + 1, and refused when most of the classes that makes would be
// empty: a stray byte (250 in a 10-class file) would otherwise train with 251 classes.
std::int64_t check_labels(const std::string& path, const std::vector<std::uint8_t>& labels,
                          std::int64_t declared) {
  if (declared > 0) {
    for (std::size_t i = 0; i < labels.size(); ++i)
      if (labels[i] >= declared)
        fail(path, "image " + std::to_string(i) + " (byte offset " + std::to_string(8 + i) +
                       ") has label " + std::to_string(labels[i]) + ", but the data set has " +
                       std::to_string(declared) + " classes (labels 0.." +
                       std::to_string(declared - 1) + ")");
    return declared;
  }
  std::vector<std::int64_t> count(256, 0);
  for (auto l : labels) ++count[l];
  std::int64_t classes = 0, used = 0;
  for (std::int64_t c = 0; c < 256; ++c)
    if (count[c] > 0) {
      classes = c + 1;
      ++used;
    }
  const std::int64_t empty = classes - used;
  if (2 * empty > classes) {
    const auto first = std::find(labels.begin(), labels.end(), classes - 1) - labels.begin();
    fail(path, "image " + std::to_string(first) + " (byte offset " + std::to_string(8 + first) +
                   ") has label " + std::to_string(classes - 1) + ", so " +
                   std::to_string(classes) + " classes would be inferred, " +
                   std::to_string(empty) +
                   " of them without any image; set data.num_classes to the number of classes "
                   "if the labels are right");
  }
  return classes;
}

}  // namespace

std::shared_ptr<const NamedDataset> load_idx(const std::string& images_file,
                                             const std::string& labels_file, std::string name,
                                             std::int64_t image_size, Stats stats,
                                             std::int64_t num_classes) {
  // Both headers first: a count mismatch is reported before any data is read.
  GzFile image_file(images_file), label_file(labels_file);
  const IdxHeader images = read_header(image_file, 3, "idx3 unsigned-byte images");
  const IdxHeader labels = read_header(label_file, 1, "idx1 unsigned-byte labels");
  if (images.dims[0] != labels.dims[0])
    throw std::runtime_error(images_file + " holds " + std::to_string(images.dims[0]) +
                             " images but " + labels_file + " holds " +
                             std::to_string(labels.dims[0]) + " labels");
  if (images.dims[0] == 0) fail(images_file, "holds no images");
  if (images.dims[1] == 0 || images.dims[2] == 0) fail(images_file, "images have an empty side");
  std::vector<std::uint8_t> label_bytes = read_data(label_file, labels);
  const std::int64_t classes = check_labels(labels_file, label_bytes, num_classes);
  std::vector<std::uint8_t> pixels = read_data(image_file, images);
  std::vector<std::int64_t> l(label_bytes.begin(), label_bytes.end());
  return std::make_shared<MemoryDataset>(
      std::move(name), 1, static_cast<std::int64_t>(images.dims[1]),
      static_cast<std::int64_t>(images.dims[2]), std::move(pixels), std::move(l), image_size,
      std::move(stats), classes);
}

}  // namespace wb::data
