// The right ABI number but a record of another size (a plugin built with an edited plugin.h):
// the host must refuse it before reading any field after the size, and never register it.
#include "workbench/plugin.h"

static void never_called(void*) {
  *static_cast<volatile int*>(nullptr) = 1;
}

extern "C" __attribute__((visibility("default"))) const wb_plugin_info* workbench_plugin_info() {
  static const wb_plugin_info info{WORKBENCH_ABI_VERSION,     sizeof(wb_plugin_info) - 8,
                                   WORKBENCH_VERSION,         WORKBENCH_TORCH_VERSION,
                                   WORKBENCH_CXX_ABI,         __VERSION__,
                                   "test: wrong record size", never_called};
  return &info;
}
