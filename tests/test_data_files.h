// Writing the files the data readers read (IDX, CIFAR, raw and gzip bytes), for the data tests.
#pragma once

#include <doctest/doctest.h>
#include <zlib.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace wbtest {

using Bytes = std::vector<std::uint8_t>;

inline void put32(Bytes& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(v >> s));
}

// An idx3 header [n, h, w], followed by n x h x w pixel bytes when `with_data`.
inline Bytes idx_images(std::uint32_t n, std::uint32_t h, std::uint32_t w,
                        std::uint32_t magic = 0x803, bool with_data = true) {
  Bytes b;
  put32(b, magic);
  put32(b, n);
  put32(b, h);
  put32(b, w);
  if (with_data)
    for (std::uint32_t i = 0; i < n * h * w; ++i)
      b.push_back(static_cast<std::uint8_t>(i * 7 % 256));
  return b;
}

inline Bytes idx_labels(const std::vector<std::uint8_t>& labels) {
  Bytes b;
  put32(b, 0x801);
  put32(b, static_cast<std::uint32_t>(labels.size()));
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

inline void write_raw(const std::string& path, const Bytes& b) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

inline void write_gz(const std::string& path, const Bytes& b) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, b.data(), static_cast<unsigned>(b.size())) == static_cast<int>(b.size()));
  gzclose(f);
}

}  // namespace wbtest
