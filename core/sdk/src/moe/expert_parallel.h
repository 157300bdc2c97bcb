// The expert-parallel forward of wb::MoeLayer (docs/scale.md): each rank holds E / N of the
// experts; tokens travel to their experts' ranks and back through Communicator::all_to_all.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "workbench/comm.h"
#include "workbench/routing.h"

namespace wb::moe {

// y[t] = sum_j weights[t, j] * E_{experts[t, j]}(x[t]) over kept assignments, as
// wb::dispatch_combine, with the experts spread over the ranks: this rank holds experts
// [first, first + w1.size(0)) of `experts` (w1 [E/N, D, H], ...). Collective: every rank calls
// it once per layer forward, in the same order (the backward exchanges through autograd).
at::Tensor expert_parallel_combine(const at::Tensor& x, const Routing& routing,
                                   std::int64_t experts, const at::Tensor& w1, const at::Tensor& b1,
                                   const at::Tensor& w2, const at::Tensor& b2, Communicator& comm);

}  // namespace wb::moe
