// The lock that makes one trainer per point (docs/scale.md, "Shared sweeps"): `flock` on
// <run>/point.lock, held by the `_point` process for its whole life, so that it goes away with
// its holder however that ends (exit, crash, SIGKILL). The lock file holds "pid host" of the
// holder, for the message that a second trainer gets.
//
// A launcher (`workbench run`) claims a point by taking its lock before it starts the point's
// process, which inherits the locked descriptor (the same open file description, so the same
// lock): between claim and start no other launcher can take the point.
#pragma once

#include <filesystem>
#include <string>

namespace wb {

// The environment variable through which a launcher hands a claimed lock to the `_point`
// process: the number of the inherited descriptor.
inline constexpr const char* kPointLockFdVariable = "WB_POINT_LOCK_FD";
// The pid of the launcher that started a `_point` process: the point dies with it.
inline constexpr const char* kParentPidVariable = "WB_PARENT_PID";

class PointLock {
 public:
  PointLock() = default;
  ~PointLock();
  PointLock(PointLock&& other) noexcept;
  PointLock& operator=(PointLock&& other) noexcept;
  PointLock(const PointLock&) = delete;
  PointLock& operator=(const PointLock&) = delete;

  // Takes the lock of point directory `dir` without waiting. On success the lock file names
  // this process and host; otherwise the result is not held() and holder() names who holds it.
  static PointLock try_acquire(const std::filesystem::path& dir);
  // Adopts a descriptor inherited from a launcher (its claim); makes sure it holds the lock
  // and names this process in the lock file. Throws if the descriptor is not a lock of `dir`.
  static PointLock adopt(const std::filesystem::path& dir, int fd);

  bool held() const { return fd_ >= 0; }
  const std::string& holder() const { return holder_; }  // "pid P on host H" when not held
  int fd() const { return fd_; }
  // Gives up the lock (the descriptor is closed; a process that inherited it keeps it).
  void release();
  // Hands the descriptor (and with it the lock) to the caller, which must close it.
  int take_fd();

 private:
  int fd_ = -1;
  std::string holder_;
};

// "pid P on host H" from a lock file's contents; "an unknown process" when it is empty.
std::string describe_lock_holder(const std::filesystem::path& lock_file);

std::filesystem::path point_lock_file(const std::filesystem::path& dir);

}  // namespace wb
