// Benchmarks of the `workbench bench <what>` verb. Each takes the arguments after <what>, prints
// its figures to stdout and returns the process exit status.
#pragma once

#include <string>
#include <vector>

namespace wb::cli {

// `bench moe`: forward + backward of one MoE layer (noisy top-k gate, grouped dispatch) against
// the FLOP-matched dense MLP on the same tokens, and against a naive masked loop over experts.
int bench_moe(const std::vector<std::string>& args);

}  // namespace wb::cli
