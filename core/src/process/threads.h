// Process-wide settings of a workbench process: intra-op threads (how many each point gets, and
// setting them) and the allocator.
#pragma once

namespace wb {

// The threads of a point: `requested` (command line) when > 0, else `configured` (the run
// configuration's threads) when > 0, else every core.
int resolve_threads(int requested, int configured);

// The threads of each point when `at_once` points share `total`: `configured` when > 0, else an
// even share of at least 1.
int threads_per_point(int configured, int total, int at_once);

// The cores of this machine (at least 1).
int all_cores();

// Sets LibTorch's intra-op threads, and OMP_NUM_THREADS for what starts later. Call it before
// anything else touches LibTorch: its default here is one thread.
void use_threads(int threads);

// A training step allocates and frees the same large activation buffers every step. With
// glibc's defaults, blocks above the (adaptive) mmap threshold are mapped and unmapped each
// time and the heap top is trimmed back to the kernel, so every step page-faults its
// activations in again (perf: ~10 % of the step in the page-fault handler, and the step 1.6x
// slower). Keeping blocks up to 32 MiB in the heap and never trimming below 1 GiB removes that;
// the cost is that the process keeps its peak heap. WORKBENCH_MALLOC=default keeps glibc's
// behaviour (BENCHMARKS.md has both). Called first thing in main().
void tune_allocator();

}  // namespace wb
