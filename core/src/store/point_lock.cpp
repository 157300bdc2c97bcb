#include "store/point_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>
#include <stdexcept>

namespace wb {

namespace {

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "unknown";
  return name;
}

bool try_flock(int fd) {
  for (;;) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return true;
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return false;
    throw std::runtime_error(std::string("flock: ") + std::strerror(errno));
  }
}

// Records this process as the holder. A failure here is not fatal: the lock itself is what
// keeps a second trainer out, the text only makes the message better.
void write_holder(int fd) {
  const std::string text = std::to_string(::getpid()) + " " + host_name() + "\n";
  if (::ftruncate(fd, 0) == 0) {
    const ssize_t n = ::pwrite(fd, text.data(), text.size(), 0);
    (void)n;
  }
}

}  // namespace

std::filesystem::path point_lock_file(const std::filesystem::path& dir) {
  return dir / "point.lock";
}

std::string describe_lock_holder(const std::filesystem::path& lock_file) {
  std::string pid, host;
  if (const int fd = ::open(lock_file.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
    char buffer[512] = {};
    const ssize_t n = ::read(fd, buffer, sizeof buffer - 1);
    ::close(fd);
    if (n > 0) std::istringstream(std::string(buffer, static_cast<std::size_t>(n))) >> pid >> host;
  }
  if (pid.empty()) return "an unknown process";
  return "pid " + pid + " on host " + (host.empty() ? "?" : host);
}

PointLock::~PointLock() {
  release();
}

PointLock::PointLock(PointLock&& other) noexcept : fd_(other.fd_), holder_(other.holder_) {
  other.fd_ = -1;
}

PointLock& PointLock::operator=(PointLock&& other) noexcept {
  if (this != &other) {
    release();
    fd_ = other.fd_;
    holder_ = std::move(other.holder_);
    other.fd_ = -1;
  }
  return *this;
}

void PointLock::release() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

int PointLock::take_fd() {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

PointLock PointLock::try_acquire(const std::filesystem::path& dir) {
  const std::filesystem::path file = point_lock_file(dir);
  const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    throw std::runtime_error("cannot open " + file.string() + ": " + std::strerror(errno));
  PointLock lock;
  try {
    if (!try_flock(fd)) {
      ::close(fd);
      lock.holder_ = describe_lock_holder(file);
      return lock;
    }
  } catch (const std::exception& e) {
    ::close(fd);
    throw std::runtime_error(file.string() + ": " + e.what());
  }
  lock.fd_ = fd;
  write_holder(fd);
  return lock;
}

PointLock PointLock::adopt(const std::filesystem::path& dir, int fd) {
  const std::filesystem::path file = point_lock_file(dir);
  struct stat inherited {
  }, on_disk{};
  if (::fstat(fd, &inherited) != 0 || ::stat(file.c_str(), &on_disk) != 0 ||
      inherited.st_dev != on_disk.st_dev || inherited.st_ino != on_disk.st_ino)
    throw std::runtime_error(std::string(kPointLockFdVariable) + "=" + std::to_string(fd) +
                             " is not an open descriptor of " + file.string());
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);  // the point's own children (ranks) must not hold it
  // Locking again through the same open file description succeeds when the launcher's claim
  // is still in force; if it is not, this is an ordinary try-lock.
  if (!try_flock(fd)) {
    ::close(fd);
    throw std::runtime_error("the point " + dir.string() + " is already being trained by " +
                             describe_lock_holder(file));
  }
  PointLock lock;
  lock.fd_ = fd;
  write_holder(fd);
  return lock;
}

}  // namespace wb
