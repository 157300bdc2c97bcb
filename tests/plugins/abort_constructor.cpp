// A plugin whose static constructor aborts: loading it kills whichever process loads it, so the
// host must only ever load it in a probe.
#include <cstdlib>

#include "workbench/plugin.h"

namespace {
struct AbortOnLoad {
  AbortOnLoad() { std::abort(); }
} abort_on_load;
}  // namespace

WORKBENCH_PLUGIN("test: aborts in a static constructor") {
  registry.add_matcher("never_seen_abort", "", {},
                       [](const wb::Params&) { return std::shared_ptr<wb::Matcher>(); });
}
