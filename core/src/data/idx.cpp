// IDX files (the MNIST format), gzip-compressed or raw: zlib's gzread reads both.
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "data/memory_dataset.h"

namespace wb::data {

namespace {

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw std::runtime_error(file + ": " + what);
}

struct IdxArray {
  std::vector<std::int64_t> dims;
  std::vector<std::uint8_t> data;
};

class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path), f_(gzopen(path.c_str(), "rb")) {
    if (!f_) fail(path, std::string("cannot open: ") + std::strerror(errno ? errno : ENOENT));
    gzbuffer(f_, 1 << 17);
  }
  ~GzFile() { gzclose(f_); }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  // Reads up to n bytes; returns how many were read (fewer at the end of the file).
  std::size_t read(std::uint8_t* out, std::size_t n) {
    std::size_t done = 0;
    while (done < n) {
      const auto chunk = static_cast<unsigned>(std::min<std::size_t>(n - done, 1u << 30));
      const int got = gzread(f_, out + done, chunk);
      if (got < 0) {
        int code = 0;
        fail(path_, std::string("read error: ") + gzerror(f_, &code));
      }
      if (got == 0) {
        int code = 0;
        const char* msg = gzerror(f_, &code);
        if (code != Z_OK && code != Z_BUF_ERROR) fail(path_, std::string("read error: ") + msg);
        break;
      }
      done += static_cast<std::size_t>(got);
    }
    return done;
  }

 private:
  std::string path_;
  gzFile f_;
};

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// Reads an IDX file of unsigned bytes with `ndim` dimensions.
IdxArray read_idx(const std::string& path, int ndim, const char* kind) {
  GzFile file(path);
  std::uint8_t head[4];
  const std::uint32_t expected = 0x0800u | static_cast<std::uint32_t>(ndim);
  if (file.read(head, 4) != 4) fail(path, "truncated: shorter than the 4-byte IDX header");
  const std::uint32_t magic = (std::uint32_t(head[0]) << 24) | (std::uint32_t(head[1]) << 16) |
                              (std::uint32_t(head[2]) << 8) | head[3];
  if (magic != expected)
    fail(path, "wrong magic number " + hex32(magic) + " (expected " + hex32(expected) + ": " +
                   kind + ")");
  IdxArray a;
  std::size_t total = 1;
  std::string shape;
  for (int d = 0; d < ndim; ++d) {
    std::uint8_t b[4];
    if (file.read(b, 4) != 4) fail(path, "truncated: the header ends inside the dimensions");
    const std::int64_t n =
        (std::int64_t(b[0]) << 24) | (std::int64_t(b[1]) << 16) | (std::int64_t(b[2]) << 8) | b[3];
    a.dims.push_back(n);
    total *= static_cast<std::size_t>(n);
    shape += (d ? " x " : "") + std::to_string(n);
  }
  a.data.resize(total);
  const std::size_t got = file.read(a.data.data(), total);
  if (got != total)
    fail(path, "truncated: the header announces " + shape + " = " + std::to_string(total) +
                   " bytes of data, the file holds " + std::to_string(got));
  return a;
}

}  // namespace

std::shared_ptr<const NamedDataset> load_idx(const std::string& images_file,
                                             const std::string& labels_file, std::string name,
                                             std::int64_t image_size, Stats stats) {
  IdxArray images = read_idx(images_file, 3, "idx3 unsigned-byte images");
  IdxArray labels = read_idx(labels_file, 1, "idx1 unsigned-byte labels");
  if (images.dims[0] != labels.dims[0])
    throw std::runtime_error(images_file + " holds " + std::to_string(images.dims[0]) +
                             " images but " + labels_file + " holds " +
                             std::to_string(labels.dims[0]) + " labels");
  if (images.dims[1] <= 0 || images.dims[2] <= 0) fail(images_file, "images have an empty side");
  std::vector<std::int64_t> l(labels.data.begin(), labels.data.end());
  return std::make_shared<MemoryDataset>(std::move(name), 1, images.dims[1], images.dims[2],
                                         std::move(images.data), std::move(l), image_size,
                                         std::move(stats));
}

}  // namespace wb::data
