// Internal dispatch variants beside the public wb::dispatch_combine (moe_layer.h), kept for the
// benchmark and the tests: the same computation written with the plain autograd graph, and the
// naive masked loop that runs every expert on every token.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "workbench/routing.h"

namespace wb::moe {

// The kept (token, choice) assignments of a routing, grouped by expert.
struct DispatchPlan {
  at::Tensor token;  // [A] int64: token of each kept assignment, grouped by expert (stable)
  at::Tensor slot;   // [A] int64: its index into the flattened [T * k] routing tensors
  // [T * k] int64: the grouped row of each (token, choice), A for a dropped one (a zero row):
  // the combine gathers a token's k rows back instead of scattering them (index_add).
  at::Tensor back;
  std::vector<std::int64_t> sizes;  // [E]: assignments per expert (read once from the device)
  std::int64_t assignments = 0;     // A
};

DispatchPlan plan_dispatch(const Routing& routing, std::int64_t experts);

// wb::dispatch_combine with an explicit block size: on the CPU every expert's rows are cut into
// blocks of at most `block` rows (0 = the default), which run on the threads as whole units.
at::Tensor dispatch_combine_blocked(const at::Tensor& x, const Routing& routing,
                                    const at::Tensor& w1, const at::Tensor& b1,
                                    const at::Tensor& w2, const at::Tensor& b2, std::int64_t block);

// dispatch_combine with the per-expert products recorded by autograd (split, addmm, cat).
at::Tensor dispatch_combine_autograd(const at::Tensor& x, const Routing& routing,
                                     const at::Tensor& w1, const at::Tensor& b1,
                                     const at::Tensor& w2, const at::Tensor& b2);

// Every expert on all T tokens, outputs masked by the combine weights: E times the work.
at::Tensor dispatch_combine_masked(const at::Tensor& x, const Routing& routing,
                                   const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                                   const at::Tensor& b2);

}  // namespace wb::moe
