// A plugin whose static constructor ends the process with exit(0): a probe that "succeeds"
// without reporting anything.
#include <cstdlib>

#include "workbench/plugin.h"

namespace {
struct ExitOnLoad {
  ExitOnLoad() { std::exit(0); }
} exit_on_load;
}  // namespace

WORKBENCH_PLUGIN("test: exit(0) in a static constructor") {
  registry.add_matcher("never_seen_exit", "", {},
                       [](const wb::Params&) { return std::shared_ptr<wb::Matcher>(); });
}
