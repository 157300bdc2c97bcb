// Crash-safe file writing: every run file that must survive a crash is written to
// `<name>.tmp`, fsynced, renamed over the original, and the directory fsynced, so a reader sees
// either the old or the new content, never a partial file.
#pragma once

#include <filesystem>
#include <string>

namespace wb {

// Writes `content` to `file` atomically (tmp + fsync + rename + directory fsync). Creates the
// parent directory if needed. Throws std::runtime_error naming the file and the OS error.
void write_file_atomic(const std::filesystem::path& file, const std::string& content);

// The temporary name used for `file`: "<file>.<pid>.tmp" in the same directory (rename stays
// atomic; the pid keeps writers in different processes apart).
std::filesystem::path temporary_path(const std::filesystem::path& file);

// fsyncs a file's data, or a directory's entries. Throw naming the path on failure.
void fsync_file(const std::filesystem::path& file);
void fsync_directory(const std::filesystem::path& dir);

// Renames `tmp` over `target` and fsyncs the directory: the commit step of an atomic write.
void commit_file(const std::filesystem::path& tmp, const std::filesystem::path& target);

// Reads a whole file; throws naming it if it cannot.
std::string read_file(const std::filesystem::path& file);

}  // namespace wb
