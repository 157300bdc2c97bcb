// A plugin whose static constructor never returns: its probe must be killed at the timeout.
#include <unistd.h>

#include "workbench/plugin.h"

namespace {
struct HangOnLoad {
  HangOnLoad() {
    for (;;) ::pause();
  }
} hang_on_load;
}  // namespace

WORKBENCH_PLUGIN("test: never finishes loading") {
  registry.add_matcher("never_seen_hang", "", {},
                       [](const wb::Params&) { return std::shared_ptr<wb::Matcher>(); });
}
