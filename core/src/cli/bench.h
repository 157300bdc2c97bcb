// Sub-verbs of `workbench bench`: one function each, dispatched on the first argument by
// verb_bench.cpp. Add a line here and one in its table for a new benchmark.
#pragma once

#include "cli/cli.h"

namespace wb::cli {

int bench_loader(const Args& args);  // bench_loader.cpp
int bench_step(const Args& args);    // bench_step.cpp

}  // namespace wb::cli
