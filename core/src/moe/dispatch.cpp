// Expert dispatch: the kept (token, choice) assignments are sorted by expert once (one host sync
// for the expert sizes), every expert gathers its tokens and runs its two products on them, and
// the weighted outputs are added back to their tokens. A custom autograd function reuses the
// sorted order in the backward pass instead of recording a graph node per expert and operation.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "moe/dispatch.h"
#include "workbench/moe_layer.h"

namespace wb {
namespace moe {

DispatchPlan plan_dispatch(const Routing& routing, std::int64_t experts) {
  DispatchPlan plan;
  at::Tensor bucket = routing.experts.reshape({-1});
  // Dropped assignments go to an extra bucket E, sorted last and never run.
  if (routing.kept.defined())
    bucket = bucket.masked_fill(routing.kept.reshape({-1}).logical_not(), experts);
  const at::Tensor order = std::get<1>(at::sort(bucket, /*stable=*/true, 0, false));
  const at::Tensor counts =
      at::zeros({experts + 1}, bucket.options()).scatter_add_(0, bucket, at::ones_like(bucket));
  const at::Tensor host = counts.to(at::kCPU);  // the one host sync: expert sizes
  const auto* c = host.data_ptr<std::int64_t>();
  plan.sizes.assign(c, c + experts);
  for (auto n : plan.sizes) plan.assignments += n;
  plan.slot = order.narrow(0, 0, plan.assignments);
  plan.token = at::div(plan.slot, routing.experts.size(1), "trunc");
  return plan;
}

namespace {

// Calls f(expert, offset, count) for every expert with at least one assignment.
template <class F>
void for_each_expert(const std::vector<std::int64_t>& sizes, F f) {
  std::int64_t offset = 0;
  for (std::size_t e = 0; e < sizes.size(); ++e) {
    if (sizes[e] > 0) f(static_cast<std::int64_t>(e), offset, sizes[e]);
    offset += sizes[e];
  }
}

// Splits the experts that have assignments into `bins` groups of similar total size: largest
// first, each into the lightest group so far.
std::vector<std::vector<std::int64_t>> balance(const std::vector<std::int64_t>& sizes,
                                               std::int64_t bins) {
  std::vector<std::int64_t> order;
  for (std::size_t e = 0; e < sizes.size(); ++e)
    if (sizes[e] > 0) order.push_back(static_cast<std::int64_t>(e));
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int64_t a, std::int64_t b) { return sizes[a] > sizes[b]; });
  std::vector<std::vector<std::int64_t>> groups(bins);
  std::vector<std::int64_t> load(bins, 0);
  for (auto e : order) {
    const auto g = std::min_element(load.begin(), load.end()) - load.begin();
    groups[g].push_back(e);
    load[g] += sizes[e];
  }
  return groups;
}

// Runs f(expert, offset, count) for every expert with assignments. On the CPU with several
// threads and at least as many busy experts, whole experts go to the threads (each expert's
// operations then run single-threaded): one parallel region per pass instead of one per
// operation, which keeps small per-expert products efficient and robust to a busy machine.
// f must only write what belongs to its expert.
template <class F>
void run_experts(const at::Tensor& like, const std::vector<std::int64_t>& sizes, F f) {
  std::vector<std::int64_t> offset(sizes.size(), 0);
  for (std::size_t e = 1; e < sizes.size(); ++e) offset[e] = offset[e - 1] + sizes[e - 1];
  const std::int64_t busy = std::count_if(sizes.begin(), sizes.end(), [](auto n) { return n > 0; });
  const std::int64_t threads = at::get_num_threads();
  if (!like.is_cpu() || threads < 2 || busy < threads || at::in_parallel_region()) {
    for_each_expert(sizes, f);
    return;
  }
  const auto groups = balance(sizes, threads);
  at::parallel_for(0, threads, 1, [&](std::int64_t begin, std::int64_t end) {
    at::NoGradGuard no_grad;  // grad mode is per thread; the caller's is off already
    for (auto g = begin; g < end; ++g)
      for (auto e : groups[g]) f(e, offset[e], sizes[e]);
  });
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The expert MLPs on their grouped assignments, combined per token. Everything [n_e, H] wide is
// made per expert: small buffers are reused by the allocator and stay in cache between the
// product and the GELU, where [A, H] buffers would be fresh memory (page faults) every step.
class ExpertMlps : public torch::autograd::Function<ExpertMlps> {
 public:
  // weight: [A] combine weight of each grouped assignment; token, sizes: the plan.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                            const at::Tensor& b2, const at::Tensor& token,
                            std::vector<std::int64_t> sizes) {
    const auto E = static_cast<std::int64_t>(sizes.size());
    // Saved: x, weight, w1, w2, token, then h_e, a_e, y_e of every expert (undefined if idle).
    variable_list saved(5 + 3 * E);
    saved[0] = x, saved[1] = weight, saved[2] = w1, saved[3] = w2, saved[4] = token;
    at::Tensor rows = at::empty({token.size(0), x.size(1)}, x.options());  // weighted outputs
    run_experts(x, sizes, [&](std::int64_t e, std::int64_t off, std::int64_t n) {
      const at::Tensor tokens = token.narrow(0, off, n);
      const at::Tensor h = at::addmm(b1.select(0, e), x.index_select(0, tokens), w1.select(0, e));
      const at::Tensor a = at::gelu(h);
      const at::Tensor y = at::addmm(b2.select(0, e), a, w2.select(0, e));
      at::Tensor out = rows.narrow(0, off, n);
      at::mul_out(out, y, weight.narrow(0, off, n).unsqueeze(1));
      saved[5 + 3 * e] = h, saved[6 + 3 * e] = a, saved[7 + 3 * e] = y;
    });
    ctx->save_for_backward(saved);
    ctx->saved_data["sizes"] = sizes;
    return at::zeros_like(x).index_add_(0, token, rows);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &w1 = saved[2], &w2 = saved[3];
    const at::Tensor& token = saved[4];
    const auto sizes = ctx->saved_data["sizes"].toIntVector();
    const bool want_x = ctx->needs_input_grad(0), want_weight = ctx->needs_input_grad(1);
    const bool want_experts = ctx->needs_input_grad(2) || ctx->needs_input_grad(3) ||
                              ctx->needs_input_grad(4) || ctx->needs_input_grad(5);

    at::Tensor grad_rows, grad_weight, grad_w1, grad_b1, grad_w2, grad_b2;
    if (want_x) grad_rows = at::empty({token.size(0), x.size(1)}, x.options());
    if (want_weight) grad_weight = at::empty_like(weight);
    if (want_experts) {
      grad_w1 = at::zeros_like(w1);
      grad_b1 = at::zeros({w1.size(0), w1.size(2)}, w1.options());
      grad_w2 = at::zeros_like(w2);
      grad_b2 = at::zeros({w2.size(0), w2.size(2)}, w2.options());
    }
    const at::Tensor grad = grads[0].contiguous();
    run_experts(x, sizes, [&](std::int64_t e, std::int64_t off, std::int64_t n) {
      const at::Tensor &h = saved[5 + 3 * e], &a = saved[6 + 3 * e], &y = saved[7 + 3 * e];
      const at::Tensor tokens = token.narrow(0, off, n);
      const at::Tensor gy = grad.index_select(0, tokens);
      if (want_weight) grad_weight.narrow(0, off, n).copy_((gy * y).sum(1));
      const at::Tensor gys = gy * weight.narrow(0, off, n).unsqueeze(1);  // at the expert output
      const at::Tensor gh = at::gelu_backward(at::mm(gys, w2.select(0, e).t()), h);
      if (want_experts) {
        at::Tensor gw2 = grad_w2.select(0, e), gw1 = grad_w1.select(0, e);
        at::mm_out(gw2, a.t(), gys);
        grad_b2.select(0, e).copy_(gys.sum(0));
        at::mm_out(gw1, x.index_select(0, tokens).t(), gh);
        grad_b1.select(0, e).copy_(gh.sum(0));
      }
      if (want_x) {
        at::Tensor out = grad_rows.narrow(0, off, n);
        at::mm_out(out, gh, w1.select(0, e).t());
      }
    });
    at::Tensor grad_x;
    if (want_x) grad_x = at::zeros_like(x).index_add_(0, token, grad_rows);
    return {grad_x, grad_weight, grad_w1, grad_b1, grad_w2, grad_b2, at::Tensor(), at::Tensor()};
  }
};

void check_shapes(const at::Tensor& x, const Routing& r, const at::Tensor& w1, const at::Tensor& b1,
                  const at::Tensor& w2, const at::Tensor& b2) {
  auto fail = [](const std::string& what) {
    throw std::invalid_argument("dispatch_combine: " + what);
  };
  if (x.dim() != 2) fail("tokens must be [T, D], got " + std::to_string(x.dim()) + " dims");
  const auto T = x.size(0), D = x.size(1);
  if (w1.dim() != 3 || w1.size(1) != D) fail("w1 must be [E, D, H] with D = token width");
  const auto E = w1.size(0), H = w1.size(2);
  if (b1.sizes() != at::IntArrayRef{E, H}) fail("b1 must be [E, H]");
  if (w2.sizes() != at::IntArrayRef{E, H, D}) fail("w2 must be [E, H, D]");
  if (b2.sizes() != at::IntArrayRef{E, D}) fail("b2 must be [E, D]");
  if (!r.experts.defined() || r.experts.dim() != 2 || r.experts.size(0) != T)
    fail("routing.experts must be [T, k] for the T tokens");
  if (!r.weights.defined() || r.weights.sizes() != r.experts.sizes())
    fail("routing.weights must have the shape of routing.experts");
  if (r.kept.defined() && r.kept.sizes() != r.experts.sizes())
    fail("routing.kept must have the shape of routing.experts");
}

// Combine weight of each grouped assignment (autograd carries the gate's gradient through it).
at::Tensor grouped_weights(const Routing& r, const DispatchPlan& plan) {
  return r.weights.reshape({-1}).index_select(0, plan.slot);
}

}  // namespace

at::Tensor dispatch_combine_autograd(const at::Tensor& x, const Routing& routing,
                                     const at::Tensor& w1, const at::Tensor& b1,
                                     const at::Tensor& w2, const at::Tensor& b2) {
  check_shapes(x, routing, w1, b1, w2, b2);
  const DispatchPlan plan = plan_dispatch(routing, w1.size(0));
  if (plan.assignments == 0) return at::zeros_like(x);
  const at::Tensor xs = x.index_select(0, plan.token);
  const auto parts = xs.split_with_sizes(plan.sizes);
  std::vector<at::Tensor> outputs;
  for_each_expert(plan.sizes, [&](std::int64_t e, std::int64_t, std::int64_t) {
    const at::Tensor h = at::gelu(at::addmm(b1.select(0, e), parts[e], w1.select(0, e)));
    outputs.push_back(at::addmm(b2.select(0, e), h, w2.select(0, e)));
  });
  const at::Tensor weighted = at::cat(outputs) * grouped_weights(routing, plan).unsqueeze(1);
  return at::zeros_like(x).index_add(0, plan.token, weighted);
}

at::Tensor dispatch_combine_masked(const at::Tensor& x, const Routing& routing,
                                   const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                                   const at::Tensor& b2) {
  check_shapes(x, routing, w1, b1, w2, b2);
  at::Tensor weights = routing.weights;
  if (routing.kept.defined()) weights = weights * routing.kept.to(weights.scalar_type());
  const at::Tensor combine =
      at::zeros({x.size(0), w1.size(0)}, x.options()).scatter_add(1, routing.experts, weights);
  at::Tensor out = at::zeros_like(x);
  for (std::int64_t e = 0; e < w1.size(0); ++e) {
    const at::Tensor h = at::gelu(at::addmm(b1.select(0, e), x, w1.select(0, e)));
    out = out + combine.narrow(1, e, 1) * at::addmm(b2.select(0, e), h, w2.select(0, e));
  }
  return out;
}

}  // namespace moe

at::Tensor dispatch_combine(const at::Tensor& x, const Routing& routing, const at::Tensor& w1,
                            const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2) {
  moe::check_shapes(x, routing, w1, b1, w2, b2);
  const moe::DispatchPlan plan = moe::plan_dispatch(routing, w1.size(0));
  if (plan.assignments == 0) return at::zeros_like(x);
  return moe::ExpertMlps::apply(x, moe::grouped_weights(routing, plan), w1, b1, w2, b2, plan.token,
                                plan.sizes);
}

}  // namespace wb
