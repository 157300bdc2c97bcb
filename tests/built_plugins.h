// The in-tree plugins of this build (WB_BUILD_DIR/plugins), loaded once for the whole test
// binary and shared by every test that builds real gates, backbones, losses or matchers.
#pragma once

#include "plugin/loader.h"
#include "workbench/registry.h"

namespace wb_test {

inline wb::Registry& plugins() {
  static wb::Registry registry;
  static const bool loaded = [] {
    wb::PluginLoader loader(registry);
    loader.load_directory(WB_BUILD_DIR "/plugins");
    return true;
  }();
  (void)loaded;
  return registry;
}

}  // namespace wb_test
