#include "plugin/loader.h"

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include "plugin/loader_elf.h"
#include "plugin/loader_probe.h"
#include "workbench/plugin.h"

namespace wb {

namespace fs = std::filesystem;

HostAbi host_abi() {
  return {WORKBENCH_ABI_VERSION, WORKBENCH_VERSION, WORKBENCH_TORCH_VERSION, WORKBENCH_CXX_ABI};
}

fs::path probe_cache_folder() {
  auto set = [](const char* name) {
    const char* v = std::getenv(name);
    return v && *v ? v : nullptr;
  };
  if (const char* dir = set("WORKBENCH_CACHE_DIR")) return dir;
  if (const char* dir = set("XDG_CACHE_HOME")) return fs::path(dir) / "workbench";
  if (const char* dir = set("HOME")) return fs::path(dir) / ".cache" / "workbench";
  return {};
}

ProbeOptions default_probe_options() {
  ProbeOptions o;
  o.program = find_probe_program();
  if (const char* t = std::getenv("WORKBENCH_PROBE_TIMEOUT"); t && *t) {
    char* end = nullptr;
    o.timeout_seconds = std::strtod(t, &end);
    if (*end != '\0' || !(o.timeout_seconds > 0))
      throw std::runtime_error("WORKBENCH_PROBE_TIMEOUT='" + std::string(t) +
                               "' is not a positive number of seconds");
  }
  o.parallel = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (const fs::path folder = probe_cache_folder(); !folder.empty())
    o.cache_file = folder / "plugin-probes.toml";
  return o;
}

namespace {

std::string or_unknown(const char* s) {
  return s ? std::string(s) : std::string("(unset)");
}

// The fields after the ABI number and size: an empty string when the plugin may be registered,
// else the reason it may not.
std::string mismatch(const wb_plugin_info& info) {
  const HostAbi host = host_abi();
  if (or_unknown(info.torch_version) != host.torch_version)
    return "built against LibTorch " + or_unknown(info.torch_version) +
           ", this host uses LibTorch " + host.torch_version;
  if (or_unknown(info.cxx_abi) != host.cxx_abi)
    return "built with C++ ABI '" + or_unknown(info.cxx_abi) + "', this host uses '" +
           host.cxx_abi + "'";
  if (!info.register_entries) return "its plugin record has no registration function";
  return {};
}

// Read from the file before any of the library's code runs: calling a data symbol would jump
// into data and kill the process. Empty when workbench_plugin_info is a function.
std::string symbol_refusal(const fs::path& file) {
  const SymbolCheck symbol = check_function_symbol(file, "workbench_plugin_info");
  switch (symbol.verdict) {
    case SymbolCheck::Verdict::Function:
      return {};
    case SymbolCheck::Verdict::NotElf:
      return "cannot be loaded: " + symbol.reason;
    case SymbolCheck::Verdict::Missing:
      return "not a workbench plugin: it does not export workbench_plugin_info (define it with "
             "WORKBENCH_PLUGIN from <workbench/plugin.h>)";
    case SymbolCheck::Verdict::NotFunction:
      return "not a workbench plugin: " + symbol.reason + "; refused without calling it";
  }
  return "cannot be loaded";
}

}  // namespace

bool PluginLoader::load_in_process(const fs::path& file) {
  const std::string path = file.string();
  auto fail = [&](std::string reason) {
    failures_.push_back({path, std::move(reason)});
    return false;
  };
  if (std::string why = symbol_refusal(file); !why.empty()) return fail(why);
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
  // The ABI number first: it is the only field every layout shares. Then the size, before any
  // later field is read.
  const HostAbi host = host_abi();
  if (info->abi_version != host.abi_version)
    return fail("built against plugin ABI " + std::to_string(info->abi_version) +
                ", this host uses ABI " + std::to_string(host.abi_version) +
                " (rebuild the plugin against this workbench SDK)");
  if (info->info_size != sizeof(wb_plugin_info))
    return fail("its plugin record (wb_plugin_info) is " + std::to_string(info->info_size) +
                " bytes, this host's is " + std::to_string(sizeof(wb_plugin_info)) +
                " bytes (rebuild the plugin against this workbench SDK)");
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

int PluginLoader::load_files(const std::vector<fs::path>& files) {
  int loaded = 0;
  if (!probe_.enabled) {
    for (const auto& f : files) loaded += load_in_process(f) ? 1 : 0;
    return loaded;
  }
  std::vector<ProbeVerdict> verdicts(files.size());
  std::vector<LibraryStamp> stamps(files.size());
  std::vector<std::size_t> to_probe;
  std::optional<ProbeCache> cache;
  if (!probe_.cache_file.empty()) cache.emplace(probe_.cache_file);
  for (std::size_t i = 0; i < files.size(); ++i) {
    try {
      stamps[i] = stamp_of(files[i]);
    } catch (const fs::filesystem_error& e) {
      verdicts[i].reason = std::string("cannot be loaded: ") + e.code().message();
      continue;
    }
    // What the file itself shows needs no probe.
    if (verdicts[i].reason = symbol_refusal(files[i]); !verdicts[i].reason.empty()) continue;
    if (const ProbeVerdict* known = cache ? cache->find(stamps[i]) : nullptr) {
      verdicts[i] = *known;
      ++probes_cached_;
    } else {
      to_probe.push_back(i);
    }
  }
  if (!to_probe.empty() && probe_.program.empty()) {
    for (std::size_t i : to_probe)
      verdicts[i].reason =
          "cannot be probed: no workbench executable was found to run the probe (it is looked "
          "for beside libworkbench_core), and unprobed libraries are not loaded";
  } else if (!to_probe.empty()) {
    std::vector<fs::path> paths;
    for (std::size_t i : to_probe) paths.emplace_back(stamps[i].path);
    std::vector<ProbeVerdict> probed = run_probes(paths, probe_);
    probes_run_ += static_cast<int>(to_probe.size());
    for (std::size_t k = 0; k < to_probe.size(); ++k) {
      verdicts[to_probe[k]] = std::move(probed[k]);
      if (cache && verdicts[to_probe[k]].lasting)
        cache->put(stamps[to_probe[k]], verdicts[to_probe[k]]);
    }
    if (cache) cache->save();  // best effort: an unwritable cache only costs probes next time
  }
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (verdicts[i].ok)
      loaded += load_in_process(files[i]) ? 1 : 0;
    else
      failures_.push_back({files[i].string(), verdicts[i].reason});
  }
  return loaded;
}

bool PluginLoader::load_file(const fs::path& file) {
  return load_files({file}) == 1;
}

namespace {

// The shared libraries of a folder, in name order; none if it is not a folder.
std::vector<fs::path> libraries_in(const fs::path& dir) {
  std::error_code ec;
  std::vector<fs::path> files;
  if (!fs::is_directory(dir, ec)) return files;
  for (const auto& item : fs::directory_iterator(dir, ec))
    if (item.path().extension() == ".so") files.push_back(item.path());
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::string> env_plugin_path() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("WORKBENCH_PLUGIN_PATH")) {
    std::stringstream ss(env);
    std::string item;
    while (std::getline(ss, item, ':'))
      if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace

int PluginLoader::load_directory(const fs::path& dir) {
  return load_files(libraries_in(dir));
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
  for (const auto& e : env_plugin_path()) out.emplace_back(e);
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
  std::error_code ec;
  for (const auto& p : extra_paths)
    if (!fs::exists(p, ec))
      throw std::runtime_error("--plugin-path " + p + ": no such file or folder");
  for (const auto& p : env_plugin_path())
    if (!fs::exists(p, ec))
      std::cerr << "warning: WORKBENCH_PLUGIN_PATH names " << p
                << ", which does not exist (ignored)\n";
  // Every library of the search path, each once, so that their probes can run together.
  std::vector<fs::path> files;
  for (const auto& entry : plugin_search_path(extra_paths)) {
    std::vector<fs::path> found =
        fs::is_regular_file(entry, ec) ? std::vector<fs::path>{entry} : libraries_in(entry);
    for (auto& f : found) {
      f = fs::weakly_canonical(f, ec);
      if (std::find(files.begin(), files.end(), f) == files.end()) files.push_back(f);
    }
  }
  PluginLoader loader(registry);
  loader.load_files(files);
  return loader;
}

}  // namespace wb
