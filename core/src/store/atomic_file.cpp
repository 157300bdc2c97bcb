#include "store/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "store/disk_space.h"

namespace wb {

namespace {

// A failed call on `path`; a full disk is said as such (store/disk_space.h), naming `file`, the
// file being written (the target of an atomic write, not its temporary).
[[noreturn]] void os_fail(const std::string& what, const std::filesystem::path& path, int error,
                          const std::filesystem::path& file = {}) {
  const std::string text = what + " " + path.string() + ": " + std::strerror(error);
  const std::string space = out_of_space(path, error);
  if (space.empty()) throw WriteError(text, error);
  const std::filesystem::path& named = file.empty() ? path : file;
  throw WriteError(space + ": cannot write " + named.string() + " (" + text + ")", error);
}

// Closes a file descriptor when it goes out of scope (error paths included).
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

void write_all(int fd, const std::string& content, const std::filesystem::path& path,
               const std::filesystem::path& file) {
  const char* data = content.data();
  std::size_t left = content.size();
  while (left > 0) {
    ssize_t n = ::write(fd, data, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      os_fail("cannot write", path, errno, file);
    }
    data += n;
    left -= static_cast<std::size_t>(n);
  }
}

}  // namespace

std::filesystem::path temporary_path(const std::filesystem::path& file) {
  // The process id keeps two writers of one file (launchers sharing a runs directory) from
  // renaming each other's temporary away.
  std::filesystem::path tmp = file;
  tmp += "." + std::to_string(::getpid()) + ".tmp";
  return tmp;
}

void fsync_file(const std::filesystem::path& file) {
  Fd f{::open(file.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) os_fail("cannot open", file, errno);
  if (::fsync(f.fd) != 0) os_fail("cannot fsync", file, errno);
}

void fsync_directory(const std::filesystem::path& dir) {
  const std::filesystem::path d = dir.empty() ? std::filesystem::path(".") : dir;
  Fd f{::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (f.fd < 0) os_fail("cannot open directory", d, errno);
  if (::fsync(f.fd) != 0) os_fail("cannot fsync directory", d, errno);
}

void commit_file(const std::filesystem::path& tmp, const std::filesystem::path& target) {
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    const int error = errno;
    throw std::runtime_error("cannot rename " + tmp.string() + " to " + target.string() + ": " +
                             std::strerror(error));
  }
  fsync_directory(target.parent_path());
}

void write_file_atomic(const std::filesystem::path& file, const std::string& content) {
  const auto dir = file.parent_path();
  std::error_code ec;
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create directory " + dir.string() + ": " + ec.message());

  const auto tmp = temporary_path(file);
  try {
    {
      Fd f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
      if (f.fd < 0) os_fail("cannot create", tmp, errno, file);
      write_all(f.fd, content, tmp, file);
      if (::fsync(f.fd) != 0) os_fail("cannot fsync", tmp, errno, file);
      const int fd = f.fd;
      f.fd = -1;
      if (::close(fd) != 0) os_fail("cannot close", tmp, errno, file);  // NFS reports errors here
    }
    commit_file(tmp, file);
  } catch (...) {
    std::filesystem::remove(tmp, ec);  // best effort: the original is untouched
    throw;
  }
}

std::string read_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + file.string() + ": " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw std::runtime_error("cannot read " + file.string());
  return text.str();
}

}  // namespace wb
