// Sub-verbs of `workbench bench`: one function each, dispatched on the first argument by
// verb_bench.cpp. Each takes the arguments after its name, prints its figures to stdout and
// returns the exit status. Add a line here and one in verb_bench.cpp's table for a new one.
#pragma once

#include "cli/cli.h"

namespace wb::cli {

int bench_loader(const Args& args);  // bench_loader.cpp
// Forward + backward of one MoE layer (noisy top-k gate, grouped dispatch) against the
// FLOP-matched dense MLP on the same tokens, and against a naive masked loop over experts.
int bench_moe(const Args& args);  // bench_moe.cpp
// One whole training step (wb::train_step) of an experiment file, optionally without a loss.
int bench_step(const Args& args);  // bench_step.cpp

}  // namespace wb::cli
