#include "store/disk_space.h"

#include <sys/statvfs.h>

#include <cerrno>
#include <system_error>

#include "h5/h5.h"

namespace wb {

namespace {

// No block left for an unprivileged writer of the folder that holds `file`.
bool file_system_full(const std::filesystem::path& file) {
  std::filesystem::path dir = file.parent_path();
  if (dir.empty()) dir = ".";
  struct statvfs s {};
  if (::statvfs(dir.c_str(), &s) != 0) return false;
  return s.f_blocks > 0 && s.f_bavail == 0;
}

}  // namespace

std::string out_of_space(const std::filesystem::path& file, int error) {
  if (error == ENOSPC) return "no space left on device";
  if (error == EDQUOT) return "no space left: disk quota exceeded";
  if (error == EFBIG)
    return "no space left for the file: it reached the file-size limit (RLIMIT_FSIZE or the file "
           "system's largest file)";
  if (file_system_full(file)) return "no space left on device";
  return "";
}

int os_error_of(const std::exception& e) {
  if (const auto* w = dynamic_cast<const WriteError*>(&e)) return w->os_error;
  if (const auto* h = dynamic_cast<const h5::Error*>(&e)) return h->os_error;
  if (const auto* s = dynamic_cast<const std::system_error*>(&e)) {
    if (s->code().category() == std::generic_category() ||
        s->code().category() == std::system_category())
      return s->code().value();
  }
  return 0;
}

std::string write_failure(const std::string& what, const std::filesystem::path& file,
                          const std::exception& e, const std::string& kept) {
  const std::string reason = out_of_space(file, os_error_of(e));
  if (reason.empty()) return "cannot write " + what + " " + file.string() + ": " + e.what();
  return reason + ": cannot write " + what + " " + file.string() + " (" + kept + "; " + e.what() +
         ")";
}

}  // namespace wb
