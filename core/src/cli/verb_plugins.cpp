#include <boost/program_options.hpp>

#include <iostream>

#include "cli/cli.h"
#include "config/schema.h"
#include "plugin/loader.h"
#include "plugin/loader_probe.h"
#include "workbench/registry.h"

namespace wb::cli {

namespace po = boost::program_options;

int verb_probe(const Args& args) {
  po::options_description opts(
      "workbench _probe [options] LIBRARY...   (internal: load each library in a child process "
      "and report on stdout, as TOML, what was found)");
  double timeout = default_probe_options().timeout_seconds;
  int parallel = 1;
  std::vector<std::string> files;
  opts.add_options()("help,h", "show this help")(
      "timeout", po::value(&timeout),
      "seconds a library may take to load (default: WORKBENCH_PROBE_TIMEOUT, else 30)")(
      "parallel", po::value(&parallel), "libraries probed at once (default 1)");
  po::options_description hidden;
  hidden.add_options()("library", po::value(&files), "the libraries");
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description positional;
  positional.add("library", -1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
  po::notify(vm);
  if (vm.count("help") || files.empty()) {
    (vm.count("help") ? std::cout : std::cerr) << opts;
    return vm.count("help") ? 0 : 2;
  }
  if (!(timeout > 0) || parallel < 1)
    throw std::runtime_error("--timeout must be positive and --parallel at least 1");
  const std::string report = probe_libraries(
      std::vector<std::filesystem::path>(files.begin(), files.end()), timeout, parallel);
  std::cout << report << std::flush;
  return std::cout ? 0 : 1;
}

int verb_plugins(const Args& args) {
  po::options_description opts("workbench plugins [options]");
  std::vector<std::string> paths;
  opts.add_options()("help,h", "show this help")("plugin-path", po::value(&paths)->composing(),
                                                 "extra plugin folder or file (repeatable)")(
      "names", "print only kind and name of each entry")(
      "core", "also list the keys of the core sections of a run configuration");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    const std::filesystem::path cache = default_probe_options().cache_file;
    std::cout << opts
              << "\nPlugins are searched in the host's plugin folder, in "
                 "WORKBENCH_PLUGIN_PATH (colon-separated) and in --plugin-path.\nEach library "
                 "is first loaded by a child process (a probe); verdicts are cached in "
              << (cache.empty() ? "no file (no cache folder is set)" : cache.string()) << ".\n";
    return 0;
  }
  auto print_params = [](const std::vector<ParamSpec>& params) {
    for (const auto& p : params) {
      if (!p.moved_to.empty()) {
        std::cout << "    " << p.name << ": moved to " << p.moved_to << "\n";
        continue;
      }
      std::cout << "    " << p.name << " = "
                << (p.default_value ? format_value(*p.default_value) : std::string("(unset)"))
                << "   [" << p.describe() << "]";
      if (!p.doc.empty()) std::cout << "  " << p.doc;
      std::cout << "\n";
    }
  };
  if (vm.count("core")) {
    for (const auto& section : core_sections()) {
      std::cout << "\n[" << (section.name.empty() ? "base" : "base." + section.name) << "]";
      if (!section.doc.empty()) std::cout << "  " << section.doc;
      std::cout << "\n";
      print_params(*section.params);
    }
  }
  Registry registry;
  PluginLoader loader = load_plugins(registry, paths);
  std::cout << "search path:";
  for (const auto& p : plugin_search_path(paths)) std::cout << " " << p.string();
  std::cout << "\n";
  if (vm.count("names")) {
    for (const Entry* e : registry.all()) std::cout << kind_name(e->kind) << " " << e->name << "\n";
  } else {
    for (const Entry* e : registry.all()) {
      std::cout << "\n" << kind_name(e->kind) << " " << e->name << "  (" << e->origin << ")\n";
      if (!e->doc.empty()) std::cout << "    " << e->doc << "\n";
      print_params(e->params);
    }
  }
  std::cout << "\n"
            << loader.libraries().size() << " plugin libraries loaded, " << loader.failures().size()
            << " failed (" << loader.probes_run() << " probed now, " << loader.probes_cached()
            << " verdicts from the probe cache)\n";
  for (const auto& f : loader.failures())
    std::cout << "FAILED " << f.path << ": " << f.reason << "\n";
  return 0;
}

}  // namespace wb::cli
