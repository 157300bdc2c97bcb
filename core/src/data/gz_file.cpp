#include "data/gz_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace wb::data {

namespace {

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw std::runtime_error(file + ": " + what);
}

}  // namespace

GzFile::GzFile(const std::string& path) : path_(path) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))
    fail(path, "not a regular file");
  f_ = gzopen(path.c_str(), "rb");
  if (!f_) fail(path, std::string("cannot open: ") + std::strerror(errno ? errno : ENOENT));
  gzbuffer(f_, 1 << 17);
}

GzFile::~GzFile() {
  gzclose(f_);
}

std::size_t GzFile::read(std::uint8_t* out, std::size_t n) {
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

}  // namespace wb::data
