// Exports workbench_plugin_info as a data object, not a function: calling it would jump into
// non-executable memory. The host must refuse it from the symbol table, without calling it.
#include "workbench/plugin.h"

extern "C" __attribute__((visibility("default")))
const wb_plugin_info workbench_plugin_info = {WORKBENCH_ABI_VERSION, sizeof(wb_plugin_info),
                                              WORKBENCH_VERSION,     WORKBENCH_TORCH_VERSION,
                                              WORKBENCH_CXX_ABI,     __VERSION__,
                                              "test: data symbol",   nullptr};
