#include "plugin/loader.h"

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "workbench/plugin.h"

namespace wb {

namespace fs = std::filesystem;

HostAbi host_abi() {
  return {WORKBENCH_ABI_VERSION, WORKBENCH_VERSION, WORKBENCH_TORCH_VERSION, WORKBENCH_CXX_ABI};
}

namespace {

std::string or_unknown(const char* s) {
  return s ? std::string(s) : std::string("(unset)");
}

// Returns an empty string when the plugin may be registered, else the reason it may not.
std::string mismatch(const wb_plugin_info& info) {
  const HostAbi host = host_abi();
  if (info.abi_version != host.abi_version)
    return "built against plugin ABI " + std::to_string(info.abi_version) +
           ", this host uses ABI " + std::to_string(host.abi_version) +
           " (rebuild the plugin against this workbench SDK)";
  if (or_unknown(info.torch_version) != host.torch_version)
    return "built against LibTorch " + or_unknown(info.torch_version) +
           ", this host uses LibTorch " + host.torch_version;
  if (or_unknown(info.cxx_abi) != host.cxx_abi)
    return "built with C++ ABI '" + or_unknown(info.cxx_abi) + "', this host uses '" +
           host.cxx_abi + "'";
  if (!info.register_entries) return "its plugin record has no registration function";
  return {};
}

}  // namespace

bool PluginLoader::load_file(const fs::path& file) {
  const std::string path = file.string();
  auto fail = [&](std::string reason) {
    failures_.push_back({path, std::move(reason)});
    return false;
  };
  auto library = std::make_shared<boost::dll::shared_library>();
  try {
    // rtld_now: unresolved symbols fail here, with a message, rather than later in a call.
    library->load(file.string(),
                  boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  } catch (const std::exception& e) {
    return fail(std::string("cannot be loaded: ") + e.what());
  }
  if (!library->has("workbench_plugin_info"))
    return fail(
        "not a workbench plugin: it does not export workbench_plugin_info "
        "(define it with WORKBENCH_PLUGIN from <workbench/plugin.h>)");
  const wb_plugin_info* info = nullptr;
  try {
    info = library->get<const wb_plugin_info*()>("workbench_plugin_info")();
  } catch (const std::exception& e) {
    return fail(std::string("workbench_plugin_info failed: ") + e.what());
  }
  if (!info) return fail("workbench_plugin_info returned no record");
  if (std::string why = mismatch(*info); !why.empty()) return fail(why);

  LoadedLibrary loaded{path,
                       or_unknown(info->description),
                       or_unknown(info->sdk_version),
                       or_unknown(info->torch_version),
                       or_unknown(info->compiler),
                       {}};
  const std::size_t before = registry_.all().size();
  registry_.begin_library(library, path);
  try {
    info->register_entries(&registry_);
  } catch (const std::exception& e) {
    registry_.abort_library();
    return fail(std::string("registration failed: ") + e.what());
  } catch (...) {
    registry_.abort_library();
    return fail("registration failed with an unknown exception");
  }
  registry_.end_library();
  for (const Entry* e : registry_.all())
    if (e->origin == path)
      loaded.entries.push_back(std::string(kind_name(e->kind)) + " " + e->name);
  if (registry_.all().size() == before) return fail("registers no entries");
  libraries_.push_back(std::move(loaded));
  return true;
}

int PluginLoader::load_directory(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  std::vector<fs::path> files;
  for (const auto& item : fs::directory_iterator(dir, ec))
    if (item.path().extension() == ".so") files.push_back(item.path());
  std::sort(files.begin(), files.end());
  int loaded = 0;
  for (const auto& f : files) loaded += load_file(f) ? 1 : 0;
  return loaded;
}

std::vector<fs::path> plugin_search_path(const std::vector<std::string>& extra) {
  std::vector<fs::path> out;
  // The host's own plugins: next to the binary in the build tree, or the install's lib folder.
  const fs::path exe_dir = boost::dll::program_location().parent_path().string();
  const fs::path build_dir = WORKBENCH_PLUGIN_BUILD_DIR;
  const fs::path installed = exe_dir.parent_path() / WORKBENCH_PLUGIN_INSTALL_SUBDIR;
  std::error_code ec;
  if (fs::is_directory(exe_dir.parent_path() / "plugins", ec))
    out.push_back(exe_dir.parent_path() / "plugins");
  else if (fs::is_directory(installed, ec))
    out.push_back(installed);
  else if (fs::is_directory(build_dir, ec))
    out.push_back(build_dir);
  if (const char* env = std::getenv("WORKBENCH_PLUGIN_PATH")) {
    std::stringstream ss(env);
    std::string item;
    while (std::getline(ss, item, ':'))
      if (!item.empty()) out.emplace_back(item);
  }
  for (const auto& e : extra) out.emplace_back(e);
  // The same folder twice would register every plugin twice.
  std::vector<fs::path> unique;
  for (const auto& p : out) {
    const fs::path canon = fs::weakly_canonical(p, ec);
    if (std::find(unique.begin(), unique.end(), canon) == unique.end()) unique.push_back(canon);
  }
  return unique;
}

PluginLoader load_plugins(Registry& registry, const std::vector<std::string>& extra_paths) {
  PluginLoader loader(registry);
  for (const auto& dir : plugin_search_path(extra_paths)) {
    std::error_code ec;
    if (fs::is_regular_file(dir, ec))
      loader.load_file(dir);
    else
      loader.load_directory(dir);
  }
  return loader;
}

}  // namespace wb
