#include <boost/program_options.hpp>

#include <iostream>

#include "cli/cli.h"
#include "config/schema.h"
#include "plugin/loader.h"
#include "workbench/registry.h"

namespace wb::cli {

namespace po = boost::program_options;

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
    std::cout << opts
              << "\nPlugins are searched in the host's plugin folder, in "
                 "WORKBENCH_PLUGIN_PATH (colon-separated) and in --plugin-path.\n";
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
            << " failed\n";
  for (const auto& f : loader.failures())
    std::cout << "FAILED " << f.path << ": " << f.reason << "\n";
  return 0;
}

}  // namespace wb::cli
