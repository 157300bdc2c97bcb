#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdlib>

int main(int argc, char** argv) {
  // Plugin probe verdicts go to a cache folder of this build, never the user's; the workbench
  // processes the tests start inherit it.
  setenv("WORKBENCH_CACHE_DIR", WB_BUILD_DIR "/test_cache", 1);
  return doctest::Context(argc, argv).run();
}
