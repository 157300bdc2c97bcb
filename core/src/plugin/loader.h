// Finds plugin libraries, checks that they were built for this host, and registers their
// entries. A bad library is recorded with its file and the reason; it never stops the host.
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

class PluginLoader {
 public:
  explicit PluginLoader(Registry& registry) : registry_(registry) {}

  // Loads every shared library (*.so) in the folder, in name order. A missing folder is not an
  // error (the install may not have one); returns the number of libraries loaded.
  int load_directory(const std::filesystem::path& dir);
  // Loads one library; on failure records why and returns false.
  bool load_file(const std::filesystem::path& file);

  const std::vector<LoadedLibrary>& libraries() const { return libraries_; }
  const std::vector<LoadFailure>& failures() const { return failures_; }

 private:
  Registry& registry_;
  std::vector<LoadedLibrary> libraries_;
  std::vector<LoadFailure> failures_;
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

// Loads the whole search path into the registry.
PluginLoader load_plugins(Registry& registry, const std::vector<std::string>& extra_paths);

}  // namespace wb
