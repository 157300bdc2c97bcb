// A file read through zlib's gzread, which reads gzip-compressed and raw files alike (the IDX
// and digits readers). Errors name the file.
#pragma once

#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace wb::data {

class GzFile {
 public:
  explicit GzFile(const std::string& path);  // refuses a missing file or a folder
  ~GzFile();
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  // Reads up to n bytes; returns how many were read (fewer at the end of the file).
  std::size_t read(std::uint8_t* out, std::size_t n);
  // Whether the file is read as it is (not gzip). Valid after the first read.
  bool raw() const { return gzdirect(f_) == 1; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  gzFile f_ = nullptr;
};

}  // namespace wb::data
