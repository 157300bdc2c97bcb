// Probing plugin libraries out of process, and the cache of the probes' verdicts.
//
// The host starts one probe process (`workbench _probe LIB...`), which forks a child per
// library; each child loads its one library into an empty registry with the in-process loader
// and writes a report (TOML). The probe process reads how each child ended: a report and exit
// code 0 is the loader's verdict; a signal, another exit code, exit 0 without a report or a
// child that outlives the timeout is a failure naming what happened.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "plugin/loader.h"
#include "workbench/registry.h"

namespace wb {

struct ProbeVerdict {
  bool ok = false;
  std::string reason;                // why not, when !ok
  std::string description;           // the library's own, when ok
  std::vector<std::string> entries;  // "gate noisy_topk", ...
  // False when the verdict says nothing about the library (the probe could not be started):
  // such a verdict is not cached.
  bool lasting = true;
};

// Host side: starts one probe process, `options.program _probe --timeout T --parallel N --
// FILE...`, and returns its verdicts in the files' order. Should the probe process itself fail,
// every file gets a verdict that is not lasting.
std::vector<ProbeVerdict> run_probes(const std::vector<std::filesystem::path>& files,
                                     const ProbeOptions& options);

// The probe process (`workbench _probe`): probes each file in a forked child of this process,
// at most `parallel` at once, each killed after `timeout_seconds`, and returns the verdicts as
// TOML (a [[library]] table per file: path, ok, reason, lasting, and for a loaded library its
// manifest and [[library.entry]] tables with their parameters). Forking a process that has
// only started, rather than starting one per library, saves LibTorch's start-up each time.
// Must be called while this process has one thread.
std::string probe_libraries(const std::vector<std::filesystem::path>& files, double timeout_seconds,
                            int parallel);

// The workbench executable that runs probes: this process if it is one, else the executable
// installed or built beside libworkbench_core; empty if there is none.
std::filesystem::path find_probe_program();

// What identifies a library file for the cache.
struct LibraryStamp {
  std::string path;  // absolute
  std::int64_t size = 0;
  std::int64_t mtime_ns = 0;
  bool operator==(const LibraryStamp& o) const {
    return path == o.path && size == o.size && mtime_ns == o.mtime_ns;
  }
};
// Throws std::filesystem::filesystem_error when the file cannot be examined.
LibraryStamp stamp_of(const std::filesystem::path& file);

// Verdicts keyed by library stamp, in a TOML file with one [[host]] section per workbench that
// wrote to it: its versions and ABI, and its libworkbench_core's own stamp, since a rebuilt
// core may judge differently. A host reads only its own section; a section whose core has been
// rebuilt or removed is dropped at the next save, so that a build tree and an install share the
// file without evicting each other. A missing or unreadable file is an empty cache; one that
// cannot be written only costs probes.
class ProbeCache {
 public:
  explicit ProbeCache(std::filesystem::path file);
  const ProbeVerdict* find(const LibraryStamp& stamp) const;
  void put(const LibraryStamp& stamp, const ProbeVerdict& verdict);
  // Merges with what other processes wrote meanwhile, drops libraries that no longer exist and
  // replaces the file atomically, under a lock (`<file>.lock`). Returns false if it could not
  // be written.
  bool save() const;

 private:
  using Entries = std::map<std::string, std::pair<LibraryStamp, ProbeVerdict>>;
  struct Host {
    std::string id;     // versions and ABI
    LibraryStamp core;  // libworkbench_core
    Entries entries;
    bool is(const Host& o) const { return id == o.id && core == o.core; }
  };
  static Host this_host();
  static std::vector<Host> read(const std::filesystem::path& file);
  bool save_locked() const;

  std::filesystem::path file_;
  Host host_;
  Entries changed_;
};

}  // namespace wb
