// Fuzz targets whose readers take file names: the input is written to files in a temporary
// folder of this process, removed at exit.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace wbfuzz {

inline const std::filesystem::path& scratch() {
  // Never destroyed, so that the exit handler can still use it.
  static const std::filesystem::path* dir = [] {
    // Memory-backed where there is one: on a disk, writing the files costs most of the time.
    std::error_code ec;
    const std::filesystem::path base =
        std::filesystem::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0
            ? std::filesystem::path("/dev/shm")
            : std::filesystem::temp_directory_path();
    std::string pattern = (base / "wb_fuzz_XXXXXX").string();
    if (!::mkdtemp(pattern.data())) std::abort();
    return new std::filesystem::path(pattern);
  }();
  static const bool cleanup = std::atexit([] {
                                std::error_code ec;
                                std::filesystem::remove_all(*dir, ec);
                              }) == 0;
  (void)cleanup;
  return *dir;
}

// Writes `size` bytes to scratch()/name and returns its path.
inline std::string write_file(const std::string& name, const std::uint8_t* data, std::size_t size) {
  const std::string path = (scratch() / name).string();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (size && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) std::abort();
  return path;
}

// A finding that is not a crash: a broken invariant.
[[noreturn]] inline void broken(const std::string& what) {
  std::fprintf(stderr, "invariant broken: %s\n", what.c_str());
  std::abort();
}

}  // namespace wbfuzz
