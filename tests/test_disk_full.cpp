// A full disk is said as such: every writer of a run file (here the atomic writer of status.toml,
// config.toml and reports; metrics.h5 in test_h5.cpp) reports "no space left" and names the file,
// and what was written before stays readable. A file-size limit (RLIMIT_FSIZE, in a child
// process) makes the real writes fail as a full disk does, without root or a small file system.
#include <doctest/doctest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <filesystem>
#include <string>

#include "fixture_temp_dir.h"
#include "store/atomic_file.h"
#include "store/disk_space.h"

namespace fs = std::filesystem;

namespace {

using wbtest::TempDir;

}  // namespace

TEST_CASE("disk space: the errors of a full disk are named, others are not") {
  TempDir dir("disk_full");
  const fs::path file = dir.path() / "status.toml";
  CHECK(wb::out_of_space(file, ENOSPC) == "no space left on device");
  CHECK(wb::out_of_space(file, EDQUOT).rfind("no space left: disk quota exceeded", 0) == 0);
  CHECK(wb::out_of_space(file, EFBIG).rfind("no space left for the file", 0) == 0);
  // EIO, or no errno at all, counts as a full disk only when the file system is full; the
  // temporary folder of a test machine is not.
  CHECK(wb::out_of_space(file, EIO).empty());
  CHECK(wb::out_of_space(file, 0).empty());
  CHECK(wb::os_error_of(wb::WriteError("x", ENOSPC)) == ENOSPC);
  CHECK(wb::os_error_of(std::runtime_error("x")) == 0);
}

TEST_CASE("disk space: an atomic write that runs out of space names the file, keeps the old one") {
  TempDir dir("disk_full");
  const fs::path file = dir.path() / "status.toml";
  wb::write_file_atomic(file, "state = \"running\"\n");
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Writes past 4 KiB fail with EFBIG (SIGXFSZ ignored), as a full disk fails them with ENOSPC.
    std::signal(SIGXFSZ, SIG_IGN);
    const rlimit limit{4096, 4096};
    setrlimit(RLIMIT_FSIZE, &limit);
    int code = 3;
    try {
      wb::write_file_atomic(file, std::string(100000, 'x'));
      code = 1;  // the write should have failed
    } catch (const wb::WriteError& e) {
      const std::string what = e.what();
      // Names the file being written (not only its temporary) and says no space.
      code = what.rfind("no space left", 0) != 0                                      ? 2
             : what.find("cannot write " + file.string() + " (") == std::string::npos ? 4
             : e.os_error != EFBIG                                                    ? 5
                                                                                      : 0;
    } catch (...) {
      code = 6;
    }
    _exit(code);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(wb::read_file(file) == "state = \"running\"\n");
  std::size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir.path())) files += entry.is_regular_file();
  CHECK(files == 1);  // the temporary is gone
}
