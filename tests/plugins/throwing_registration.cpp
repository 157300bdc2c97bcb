// Registers one entry, then throws: the host must roll the entry back and report the library.
#include <stdexcept>

#include "workbench/plugin.h"

WORKBENCH_PLUGIN("test: registration that throws") {
  registry.add_matcher("half_registered", "", {},
                       [](const wb::Params&) { return std::shared_ptr<wb::Matcher>(); });
  throw std::runtime_error("plugin refuses to register");
}
