// A full disk said as such. Each layer reports it its own way: the OS as ENOSPC or EDQUOT, the
// file-size limit as EFBIG, HDF5 as a generic "write failed" (the errno only in its text),
// LibTorch's archive writer without any errno, and some file systems as EIO at fsync or close
// once delayed blocks cannot be allocated. Every writer of a run file (status.toml, config.toml,
// metrics.h5, checkpoints, clusters.h5, reports) turns such a failure into one message that says
// "no space left" and names the file.
#pragma once

#include <exception>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace wb {

// A failed write with the OS error behind it (0 when unknown).
class WriteError : public std::runtime_error {
 public:
  WriteError(const std::string& message, int os_error)
      : std::runtime_error(message), os_error(os_error) {}
  const int os_error;
};

// Why a write to `file` failed for lack of space: "no space left on device", "no space left:
// disk quota exceeded" or "no space left for the file: it reached the file-size limit"; "" when
// space is not the problem. `error` is the errno the failing layer saw (0 when it said none);
// whatever it is, a file system with no block left for this process (statvfs of the file's
// folder) counts as full.
std::string out_of_space(const std::filesystem::path& file, int error);

// The OS error carried by an exception of the writers (WriteError, h5::Error,
// std::system_error and std::filesystem::filesystem_error); 0 when it carries none.
int os_error_of(const std::exception& e);

// The message of a failed write of `what` ("metrics file", "checkpoint") to `file`:
// "no space left on device: cannot write <what> <file> (<kept>; <details>)" when the disk is
// full, else "cannot write <what> <file>: <details>". `kept` says what stays readable.
std::string write_failure(const std::string& what, const std::filesystem::path& file,
                          const std::exception& e, const std::string& kept);

}  // namespace wb
