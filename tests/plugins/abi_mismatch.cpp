// Claims a plugin ABI the host does not speak; the host must refuse it without calling it.
#include "workbench/plugin.h"

static void never_called(void*) {
  *static_cast<volatile int*>(nullptr) = 1;
}

extern "C" __attribute__((visibility("default"))) const wb_plugin_info* workbench_plugin_info() {
  static const wb_plugin_info info{WORKBENCH_ABI_VERSION + 1, sizeof(wb_plugin_info),
                                   WORKBENCH_VERSION,         WORKBENCH_TORCH_VERSION,
                                   WORKBENCH_CXX_ABI,         __VERSION__,
                                   "test: future ABI",        never_called};
  return &info;
}
