// The benchmarks of workbench-bench (also run as `workbench bench NAME`): one function each,
// dispatched on the first argument by main.cpp. Each takes the arguments after its name, prints
// its figures to stdout and returns the exit status. Add a line here and one in main.cpp's
// table for a new one.
#pragma once

#include <string>
#include <vector>

namespace wb::bench {

using Args = std::vector<std::string>;

int bench_loader(const Args& args);  // loader.cpp
// Forward + backward of one MoE layer (noisy top-k gate, grouped dispatch) against the
// FLOP-matched dense MLP on the same tokens, and against a naive masked loop over experts.
int bench_moe(const Args& args);  // moe.cpp
// One whole training step (wb::train_step) of an experiment file, optionally without a loss.
int bench_step(const Args& args);  // step.cpp
// The all-to-all's share of an expert-parallel MoE layer's forward + backward on 2 ranks.
int bench_expert_parallel(const Args& args);  // expert_parallel.cpp

}  // namespace wb::bench
