// Finds plugin libraries, checks that they were built for this host, and registers their
// entries. A bad library is recorded with its file and the reason; it never stops the host.
//
// A library's static constructors and registration run arbitrary code, so each library is
// first loaded by a probe, a child process (`workbench _probe LIB`); only libraries the probe
// accepted are loaded into this process. Verdicts are cached by path, size and modification
// time, so an unchanged library is probed once (loader_probe.h).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "workbench/registry.h"

namespace wb {

struct LoadedLibrary {
  std::string path;
  std::string description;
  std::string sdk_version, torch_version, compiler;
  std::vector<std::string> entries;  // "gate noisy_topk", ...
};

struct LoadFailure {
  std::string path;
  std::string reason;
};

// How libraries are probed before they are loaded into this process.
struct ProbeOptions {
  // false: load into this process without a probe. The probe itself runs so, and so may a
  // caller that trusts every library it loads.
  bool enabled = true;
  std::filesystem::path program;     // the workbench executable, run as `program _probe LIB`
  double timeout_seconds = 30;       // a probe still running after this long is killed
  int parallel = 1;                  // probes running at once
  std::filesystem::path cache_file;  // verdicts of earlier probes; empty: no cache
};

// Probing on, the workbench executable of this build or install, WORKBENCH_PROBE_TIMEOUT
// seconds (default 30), one probe per core, the cache in probe_cache_folder().
ProbeOptions default_probe_options();

// $WORKBENCH_CACHE_DIR, else $XDG_CACHE_HOME/workbench, else $HOME/.cache/workbench; empty
// when none of them is set.
std::filesystem::path probe_cache_folder();

class PluginLoader {
 public:
  explicit PluginLoader(Registry& registry, ProbeOptions probe = default_probe_options())
      : registry_(registry), probe_(std::move(probe)) {}

  // Loads every shared library (*.so) in the folder, in name order. A missing folder is not an
  // error (the install may not have one); returns the number of libraries loaded.
  int load_directory(const std::filesystem::path& dir);
  // Loads one library; on failure records why and returns false.
  bool load_file(const std::filesystem::path& file);
  // Probes the libraries that need it (all in one probe process, in parallel), then loads
  // those accepted, in the given order; returns the number loaded. A library whose file shows
  // that it is no plugin (not ELF, no workbench_plugin_info function) is refused unprobed.
  int load_files(const std::vector<std::filesystem::path>& files);

  const std::vector<LoadedLibrary>& libraries() const { return libraries_; }
  const std::vector<LoadFailure>& failures() const { return failures_; }
  const ProbeOptions& probe_options() const { return probe_; }
  int probes_run() const { return probes_run_; }        // libraries probed by this loader
  int probes_cached() const { return probes_cached_; }  // verdicts taken from the cache

 private:
  bool load_in_process(const std::filesystem::path& file);

  Registry& registry_;
  ProbeOptions probe_;
  std::vector<LoadedLibrary> libraries_;
  std::vector<LoadFailure> failures_;
  int probes_run_ = 0, probes_cached_ = 0;
};

// The folders searched, in order: the host's own plugin folder (build tree or install), every
// entry of WORKBENCH_PLUGIN_PATH (colon-separated), then the --plugin-path values.
std::vector<std::filesystem::path> plugin_search_path(const std::vector<std::string>& extra);

// The host's own versions, as plugins must match them.
struct HostAbi {
  unsigned abi_version;
  const char* sdk_version;
  const char* torch_version;
  const char* cxx_abi;
};
HostAbi host_abi();

// Loads the whole search path into the registry. A --plugin-path value that does not exist is
// an error naming it; a WORKBENCH_PLUGIN_PATH entry that does not exist only gets a warning on
// stderr (the variable is often set once for several installs).
PluginLoader load_plugins(Registry& registry, const std::vector<std::string>& extra_paths);

}  // namespace wb
