// Internal dispatch variants beside the public wb::dispatch_combine (moe_layer.h), kept for the
// benchmark and the tests: the same computation written with the plain autograd graph, and the
// naive masked loop that runs every expert on every token.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <atomic>
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

// The phases of the CPU kernel (dispatch_combine on CPU tensors, and blocked_mlp), forward then
// backward, for the per-phase profile of `workbench bench moe --profile`.
enum class Phase : int {
  plan,          // sort of the assignments by expert, expert sizes, combine weights
  gather,        // each block's token rows copied into a contiguous buffer
  product1,      // x·w1 + b1
  activation,    // GELU
  product2,      // a·w2 + b2
  combine,       // each token's k rows, weighted by the combine weights, summed
  grad_gather,   // the output gradient's rows per block (and the gate weights' gradient)
  grad_hidden,   // gradient at the hidden layer: (g·w2ᵀ) and the GELU's backward
  grad_experts,  // expert weight and bias gradients (aᵀ·g, xᵀ·gh, row sums)
  grad_input,    // gradient at the expert inputs: gh·w1ᵀ
  grad_combine,  // each token's k input-gradient rows summed, partial weight sums added
  count
};
const char* phase_name(Phase phase);

// Thread time spent in each phase, summed over all threads and calls, in nanoseconds.
struct PhaseTimes {
  std::array<std::atomic<std::int64_t>, static_cast<int>(Phase::count)> ns{};
  // The most threads that ran one pass's blocks together: 1 where the blocks ran one after the
  // other (one intra-op thread, or a build whose loops LibTorch cannot run in parallel).
  std::atomic<int> threads{0};
};

// Starts (a non-null pointer) or stops (nullptr) adding the kernel's phase times to `times`. Off
// by default: the kernel then reads no clock.
void set_phase_times(PhaseTimes* times);

// wb::dispatch_combine with an explicit block size: on the CPU every expert's rows are cut into
// blocks of at most `block` rows (0 = the default), which run on the threads as whole units.
at::Tensor dispatch_combine_blocked(const at::Tensor& x, const Routing& routing,
                                    const at::Tensor& w1, const at::Tensor& b1,
                                    const at::Tensor& w2, const at::Tensor& b2, std::int64_t block);

// dispatch_combine with the per-expert products recorded by autograd (split, addmm, cat).
at::Tensor dispatch_combine_autograd(const at::Tensor& x, const Routing& routing,
                                     const at::Tensor& w1, const at::Tensor& b1,
                                     const at::Tensor& w2, const at::Tensor& b2);

// How the device path runs the expert products.
enum class DeviceProducts {
  automatic,   // grouped where this LibTorch has at::_grouped_mm and it accepts the tensors
  per_expert,  // one addmm per expert: the expert sizes are read once from the device
  grouped,     // at::_grouped_mm over all experts at once: no read at all (throws without it)
};

// True when this build's LibTorch has at::_grouped_mm (WB_HAVE_GROUPED_MM, found by CMake).
bool have_grouped_mm();

// The dispatch for tensors off the CPU (docs/methods.md §3), in device-agnostic operations that
// autograd records: one stable sort of the T*k assignments by expert (dropped ones last), one
// gather of their tokens, the products (per expert or grouped), the combine weights, and a
// gather back to each token's k rows summed (deterministic, no atomic scatter). wb::
// dispatch_combine selects it for CUDA tensors; the tests run it on the CPU against the masked
// reference.
at::Tensor dispatch_combine_device(const at::Tensor& x, const Routing& routing,
                                   const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                                   const at::Tensor& b2,
                                   DeviceProducts products = DeviceProducts::automatic);

// Every expert on all T tokens, outputs masked by the combine weights: E times the work.
at::Tensor dispatch_combine_masked(const at::Tensor& x, const Routing& routing,
                                   const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                                   const at::Tensor& b2);

}  // namespace wb::moe
