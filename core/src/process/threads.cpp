#include "process/threads.h"

#include <ATen/Parallel.h>
#include <malloc.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace wb {

int all_cores() {
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

int resolve_threads(int requested, int configured) {
  if (requested > 0) return requested;
  if (configured > 0) return configured;
  return all_cores();
}

int threads_per_point(int configured, int total, int at_once) {
  if (configured > 0) return configured;
  return std::max(1, total / std::max(1, at_once));
}

void use_threads(int threads) {
  setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);
  at::set_num_threads(threads);
#ifdef _OPENMP
  // The OpenMP runtime that workbench's own parallel loops were linked with: a LibTorch that
  // brings its own copy (the pip wheel's) may not share LibTorch's setting with it.
  omp_set_num_threads(threads);
#endif
}

void tune_allocator() {
  const char* mode = std::getenv("WORKBENCH_MALLOC");
  if (mode && std::strcmp(mode, "default") == 0) return;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

}  // namespace wb
