#include <malloc.h>

#include <cstdlib>
#include <cstring>

#include "cli/cli.h"

namespace {

// A training step allocates and frees the same large activation buffers every step. With
// glibc's defaults, blocks above the (adaptive) mmap threshold are mapped and unmapped each
// time and the heap top is trimmed back to the kernel, so every step page-faults its
// activations in again (perf: ~10 % of the step in the page-fault handler, and the step 1.6x
// slower). Keeping blocks up to 32 MiB in the heap and never trimming below 1 GiB removes that;
// the cost is that the process keeps its peak heap. WORKBENCH_MALLOC=default keeps glibc's
// behaviour (BENCHMARKS.md has both).
void tune_allocator() {
  const char* mode = std::getenv("WORKBENCH_MALLOC");
  if (mode && std::strcmp(mode, "default") == 0) return;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

}  // namespace

int main(int argc, char** argv) {
  tune_allocator();
  return wb::cli::main(argc, argv);
}
