// What a plugin library includes. It defines its entries with
//
//   WORKBENCH_PLUGIN("what this library provides") {
//     registry.add_gate("noisy_topk", "V-MoE router", {...params...}, factory);
//   }
//
// which exports the one symbol the host looks for, `workbench_plugin_info`. The host reads the
// plain-C header of that record first and calls the registration function only when the ABI,
// the record's size, LibTorch and compiler ABI all match its own, so a mismatched library is
// refused, not run.
#pragma once

#include <torch/version.h>

#include <cstdint>

#include "workbench/registry.h"
#include "workbench/version.h"

// Bump whenever an SDK header changes in a way that breaks compiled plugins (docs/plugins.md,
// "The ABI version", lists what does and keeps the history).
#define WORKBENCH_ABI_VERSION 12u

#define WB_STRINGIFY2(x) #x
#define WB_STRINGIFY(x) WB_STRINGIFY2(x)
#define WORKBENCH_TORCH_VERSION     \
  WB_STRINGIFY(TORCH_VERSION_MAJOR) \
  "." WB_STRINGIFY(TORCH_VERSION_MINOR) "." WB_STRINGIFY(TORCH_VERSION_PATCH)

// The C++ ABI facts that must agree between host and plugin.
#if defined(__clang__)
#define WB_COMPILER_FAMILY "clang-" WB_STRINGIFY(__clang_major__)
#elif defined(__GNUC__)
#define WB_COMPILER_FAMILY "gcc-" WB_STRINGIFY(__GNUC__)
#else
#define WB_COMPILER_FAMILY "unknown"
#endif
#define WORKBENCH_CXX_ABI \
  WB_COMPILER_FAMILY      \
  " cxx11abi=" WB_STRINGIFY(_GLIBCXX_USE_CXX11_ABI) " std=" WB_STRINGIFY(__cplusplus)

extern "C" {
// Plain C so that the host can read it from any library, whatever it was built with.
struct wb_plugin_info {
  std::uint32_t abi_version;
  // sizeof(wb_plugin_info) in the plugin, checked against the host's before any later field is
  // read, so that a record of another layout is refused even if its ABI number was not bumped.
  std::uint32_t info_size;
  const char* sdk_version;    // workbench version the plugin was built against
  const char* torch_version;  // "1.13.0"
  const char* cxx_abi;        // WORKBENCH_CXX_ABI
  const char* compiler;       // full compiler version, for reports
  const char* description;
  void (*register_entries)(void* registry);  // takes a wb::Registry*
};
}

#define WORKBENCH_PLUGIN(DESCRIPTION)                                     \
  static void wb_register_entries_(::wb::Registry& registry);             \
  extern "C" __attribute__((visibility("default"))) const wb_plugin_info* \
  workbench_plugin_info() {                                               \
    static const wb_plugin_info info{WORKBENCH_ABI_VERSION,               \
                                     sizeof(wb_plugin_info),              \
                                     WORKBENCH_VERSION,                   \
                                     WORKBENCH_TORCH_VERSION,             \
                                     WORKBENCH_CXX_ABI,                   \
                                     __VERSION__,                         \
                                     DESCRIPTION,                         \
                                     [](void* r) { wb_register_entries_(*static_cast<::wb::Registry*>(r)); }};                    \
    return &info;                                                         \
  }                                                                       \
  static void wb_register_entries_(::wb::Registry& registry)
