// Claims to be built against another LibTorch; the host must refuse it without calling it.
#include "workbench/plugin.h"

static void never_called(void*) {
  *static_cast<volatile int*>(nullptr) = 1;
}

extern "C" __attribute__((visibility("default"))) const wb_plugin_info* workbench_plugin_info() {
  static const wb_plugin_info info{
      WORKBENCH_ABI_VERSION, sizeof(wb_plugin_info), WORKBENCH_VERSION, "0.0.1", WORKBENCH_CXX_ABI,
      __VERSION__,           "test: other LibTorch", never_called};
  return &info;
}
