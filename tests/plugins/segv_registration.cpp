// A plugin whose registration function dereferences a null pointer (SIGSEGV).
#include "workbench/plugin.h"

WORKBENCH_PLUGIN("test: segfaults while registering") {
  registry.add_matcher("never_seen_segv", "", {},
                       [](const wb::Params&) { return std::shared_ptr<wb::Matcher>(); });
  *static_cast<volatile int*>(nullptr) = 1;
}
