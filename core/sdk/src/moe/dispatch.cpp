// Expert dispatch: the kept (token, choice) assignments are sorted by expert once (one host sync
// for the expert sizes), every expert gathers its tokens and runs its two products on them, and
// the weighted outputs are added back to their tokens. A custom autograd function reuses the
// sorted order in the backward pass instead of recording a graph node per expert and operation.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <stdexcept>
#include <string>

#include "compat/torch_compat.h"
#include "moe/dispatch.h"
#include "workbench/moe_layer.h"

namespace wb {
namespace moe {

// Rows per block of expert work on the CPU: [1024, H] buffers stay in cache (measured with
// bench_moe at d = 192; see make_items).
constexpr std::int64_t kDefaultBlockRows = 1024;

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
  plan.back = at::full({bucket.size(0)}, plan.assignments, bucket.options())
                  .index_put_({plan.slot}, at::arange(plan.assignments, bucket.options()));
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

// A block of consecutive grouped rows that all go to one expert.
struct Item {
  std::int64_t expert, offset, rows;
};

// Every expert's rows cut into near-equal blocks of at most `block` rows.
std::vector<Item> make_items(const std::vector<std::int64_t>& sizes, std::int64_t block) {
  std::vector<Item> items;
  for_each_expert(sizes, [&](std::int64_t e, std::int64_t offset, std::int64_t n) {
    const auto pieces = (n + block - 1) / block, base = n / pieces, extra = n % pieces;
    for (std::int64_t i = 0; i < pieces; ++i) {
      const auto rows = base + (i < extra ? 1 : 0);
      items.push_back({e, offset, rows});
      offset += rows;
    }
  });
  return items;
}

// Runs f(index) for every item. On the CPU with several threads, the threads take whole items
// from a shared counter, largest first, and each item's operations run single-threaded: one
// parallel region per pass instead of one per operation, which keeps small products efficient,
// and a thread that the machine holds back leaves its share to the others. f must only write
// what belongs to its item.
template <class F>
void run_items(const at::Tensor& like, const std::vector<Item>& items, F f) {
  const auto n = static_cast<std::int64_t>(items.size());
  const std::int64_t threads = std::min<std::int64_t>(at::get_num_threads(), n);
  if (!like.is_cpu() || threads < 2 || at::in_parallel_region()) {
    for (std::int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::vector<std::int64_t> order(n);
  for (std::int64_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int64_t a, std::int64_t b) { return items[a].rows > items[b].rows; });
  std::atomic<std::int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](std::int64_t, std::int64_t) {
    at::NoGradGuard no_grad;  // grad mode is per thread; the caller's is off already
    for (auto i = next++; i < n; i = next++) f(order[i]);
  });
}

// Sum of each token's k grouped rows: rows is [A + 1, D] with a zero last row (dropped
// assignments point there). A parallel gather and a reduction, where index_add_ is a serial loop
// over the A rows on the CPU.
at::Tensor gather_back(const at::Tensor& rows, const at::Tensor& back, std::int64_t tokens) {
  const auto k = back.size(0) / tokens;
  const at::Tensor picked = rows.index_select(0, back);
  return k == 1 ? picked : picked.view({tokens, k, rows.size(1)}).sum(1);
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Expert MLPs y = gelu(x·w1[e] + b1[e])·w2[e] + b2[e] on grouped rows, each row's output scaled
// by its weight and added to its token. Empty token: row r is token r (a dense MLP, one expert);
// empty weight: weight 1. (Empty, not undefined: LibTorch 1.13 refuses undefined inputs here.) The
// rows are cut into blocks (make_items) that are each computed whole: small [rows, H] buffers are
// reused by the allocator and stay in cache between the product and the GELU, where [A, H] buffers
// would be fresh memory every step.
class ExpertMlps : public torch::autograd::Function<ExpertMlps> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                            const at::Tensor& b2, const at::Tensor& token, const at::Tensor& back,
                            std::vector<std::int64_t> sizes, std::int64_t block) {
    const auto items = make_items(sizes, block);
    const auto I = static_cast<std::int64_t>(items.size());
    const bool gathered = token.numel() > 0, weighted = weight.numel() > 0;
    // Saved: x, weight, w1, w2, token, then h, a, y (if weighted), x_e (if gathered) per item.
    variable_list saved(5 + 4 * I);
    saved[0] = x, saved[1] = weight, saved[2] = w1, saved[3] = w2, saved[4] = token;
    // Gathered: one extra zero row, where the dropped assignments of `back` point.
    at::Tensor out = gathered ? at::empty({token.size(0) + 1, x.size(1)}, x.options())
                              : at::empty_like(x, at::MemoryFormat::Contiguous);
    if (gathered) out.select(0, token.size(0)).zero_();
    run_items(x, items, [&](std::int64_t i) {
      const auto [e, off, n] = items[i];
      const at::Tensor xe =
          gathered ? x.index_select(0, token.narrow(0, off, n)) : x.narrow(0, off, n);
      const at::Tensor h = at::addmm(b1.select(0, e), xe, w1.select(0, e));
      const at::Tensor a = at::gelu(h);
      at::Tensor rows = out.narrow(0, off, n);
      if (weighted) {
        const at::Tensor y = at::addmm(b2.select(0, e), a, w2.select(0, e));
        at::mul_out(rows, y, weight.narrow(0, off, n).unsqueeze(1));
        saved[7 + 4 * i] = y;
      } else {
        at::addmm_out(rows, b2.select(0, e), a, w2.select(0, e));
      }
      saved[5 + 4 * i] = h, saved[6 + 4 * i] = a;
      if (gathered) saved[8 + 4 * i] = xe;  // kept: the backward needs it again
    });
    saved.push_back(back);
    ctx->save_for_backward(saved);
    ctx->saved_data["sizes"] = sizes;
    ctx->saved_data["block"] = block;
    return gathered ? gather_back(out, back, x.size(0)) : out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &w1 = saved[2], &w2 = saved[3];
    const at::Tensor& token = saved[4];
    const at::Tensor& back = saved.back();
    const bool gathered = token.numel() > 0, weighted = weight.numel() > 0;
    const auto items =
        make_items(ctx->saved_data["sizes"].toIntVector(), ctx->saved_data["block"].toInt());
    const auto I = static_cast<std::int64_t>(items.size());
    const auto D = x.size(1), H = w1.size(2);
    const bool want_x = ctx->needs_input_grad(0);
    const bool want_weight = weighted && ctx->needs_input_grad(1);
    const bool want_experts = ctx->needs_input_grad(2) || ctx->needs_input_grad(3) ||
                              ctx->needs_input_grad(4) || ctx->needs_input_grad(5);

    at::Tensor grad_rows, grad_weight, grad_w1, grad_b1, grad_w2, grad_b2;
    if (want_x)
      grad_rows = gathered ? at::empty({token.size(0) + 1, D}, x.options())
                           : at::empty_like(x, at::MemoryFormat::Contiguous);
    if (want_x && gathered) grad_rows.select(0, token.size(0)).zero_();
    if (want_weight) grad_weight = at::empty_like(weight);
    // Expert weight gradients: the first block of an expert writes them, every further block
    // writes its own partial sums (slot p), which are added once all blocks are done.
    std::vector<std::int64_t> partial(I, -1);
    std::int64_t partials = 0;
    for (std::int64_t i = 1; i < I; ++i)
      if (items[i].expert == items[i - 1].expert) partial[i] = partials++;
    at::Tensor part_w1, part_b1, part_w2, part_b2;
    if (want_experts) {
      grad_w1 = at::zeros_like(w1);
      grad_b1 = at::zeros({w1.size(0), H}, w1.options());
      grad_w2 = at::zeros_like(w2);
      grad_b2 = at::zeros({w2.size(0), D}, w2.options());
      part_w1 = at::empty({partials, D, H}, w1.options());
      part_b1 = at::empty({partials, H}, w1.options());
      part_w2 = at::empty({partials, H, D}, w2.options());
      part_b2 = at::empty({partials, D}, w2.options());
    }
    const at::Tensor grad = grads[0].contiguous();
    run_items(x, items, [&](std::int64_t i) {
      const auto [e, off, n] = items[i];
      const at::Tensor &h = saved[5 + 4 * i], &a = saved[6 + 4 * i];
      const at::Tensor tokens = gathered ? token.narrow(0, off, n) : at::Tensor();
      const at::Tensor gy = gathered ? grad.index_select(0, tokens) : grad.narrow(0, off, n);
      at::Tensor gys = gy;  // gradient at the unweighted expert output
      if (weighted) {
        if (want_weight) grad_weight.narrow(0, off, n).copy_((gy * saved[7 + 4 * i]).sum(1));
        gys = gy * weight.narrow(0, off, n).unsqueeze(1);
      }
      const at::Tensor gh = at::gelu_backward(at::mm(gys, w2.select(0, e).t()), h);
      if (want_experts) {
        const at::Tensor xe = gathered ? saved[8 + 4 * i] : x.narrow(0, off, n);
        const auto p = partial[i];
        at::Tensor gw2 = p < 0 ? grad_w2.select(0, e) : part_w2.select(0, p);
        at::Tensor gw1 = p < 0 ? grad_w1.select(0, e) : part_w1.select(0, p);
        at::Tensor gb2 = p < 0 ? grad_b2.select(0, e) : part_b2.select(0, p);
        at::Tensor gb1 = p < 0 ? grad_b1.select(0, e) : part_b1.select(0, p);
        at::mm_out(gw2, a.t(), gys);
        at::sum_out(gb2, gys, at::IntArrayRef{0});
        at::mm_out(gw1, xe.t(), gh);
        at::sum_out(gb1, gh, at::IntArrayRef{0});
      }
      if (want_x) {
        at::Tensor rows = grad_rows.narrow(0, off, n);
        at::mm_out(rows, gh, w1.select(0, e).t());
      }
    });
    at::Tensor grad_x;
    if (want_x) grad_x = gathered ? gather_back(grad_rows, back, x.size(0)) : grad_rows;
    if (want_experts && partials > 0) {
      std::vector<std::int64_t> owner;
      for (std::int64_t i = 0; i < I; ++i)
        if (partial[i] >= 0) owner.push_back(items[i].expert);
      const at::Tensor expert = at::tensor(owner, x.options().dtype(at::kLong));
      grad_w1.index_add_(0, expert, part_w1);
      grad_b1.index_add_(0, expert, part_b1);
      grad_w2.index_add_(0, expert, part_w2);
      grad_b2.index_add_(0, expert, part_b2);
    }
    return {grad_x,  grad_weight,  grad_w1,      grad_b1,      grad_w2,
            grad_b2, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Rows per block on the CPU (cache-sized); elsewhere an expert's rows are one block.
std::int64_t block_rows(const at::Tensor& x, std::int64_t block) {
  if (!x.is_cpu()) return std::numeric_limits<std::int64_t>::max();
  return block > 0 ? block : kDefaultBlockRows;
}

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

// Combine weight of each grouped assignment (autograd carries the gate's gradient through it),
// in the dtype of the expert products.
at::Tensor grouped_weights(const Routing& r, const DispatchPlan& plan, at::ScalarType dtype) {
  return r.weights.reshape({-1}).index_select(0, plan.slot).to(dtype);
}

// Under autocast the expert products run in the autocast dtype, as nn::Linear's would: the
// inputs are cast here (autograd casts the gradients back to the fp32 weights) and autocast is
// off inside, because the CPU kernel's out= products are no autocast operations.
template <class F>
at::Tensor with_autocast(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                         const at::Tensor& w2, const at::Tensor& b2, F f) {
  const c10::DeviceType device = x.device().type();
  if (!compat::autocast_enabled(device)) return f(x, w1, b1, w2, b2);
  const at::ScalarType dtype = compat::autocast_dtype(device);
  compat::AutocastGuard off(device, false, dtype);
  return f(x.to(dtype), w1.to(dtype), b1.to(dtype), w2.to(dtype), b2.to(dtype));
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
  const at::Tensor weighted =
      at::cat(outputs) * grouped_weights(routing, plan, x.scalar_type()).unsqueeze(1);
  return at::zeros_like(x).index_add(0, plan.token, weighted);
}

bool have_grouped_mm() {
#ifdef WB_HAVE_GROUPED_MM
  return true;
#else
  return false;
#endif
}

namespace {

// Rows [T*k, out] = rows [T*k, in] x weight[expert of the row] + bias[expert of the row], the
// rows grouped by expert with `ends` [E] int32 the cumulative group ends. Rows past the last end
// (dropped assignments) are left as the product leaves them: the caller masks them.
at::Tensor grouped_linear(const at::Tensor& rows, const at::Tensor& weight, const at::Tensor& ends,
                          const at::Tensor& bias_rows) {
#ifdef WB_HAVE_GROUPED_MM
  return at::_grouped_mm(rows, weight, ends) + bias_rows;
#else
  (void)rows, (void)weight, (void)ends, (void)bias_rows;
  throw std::logic_error("dispatch: this LibTorch has no at::_grouped_mm");
#endif
}

// Set when at::_grouped_mm refused the tensors once (an older GPU): automatic stops trying.
std::atomic<bool> g_grouped_refused{false};

bool use_grouped(const at::Tensor& x, DeviceProducts products) {
  if (products == DeviceProducts::grouped) return true;
  if (products == DeviceProducts::per_expert || !have_grouped_mm()) return false;
  // The grouped kernel is for bf16 on CUDA (Hopper and later).
  return x.is_cuda() && x.scalar_type() == at::kBFloat16 && !g_grouped_refused.load();
}

}  // namespace

at::Tensor dispatch_combine_device(const at::Tensor& x, const Routing& routing,
                                   const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                                   const at::Tensor& b2, DeviceProducts products) {
  check_shapes(x, routing, w1, b1, w2, b2);
  const std::int64_t E = w1.size(0), T = x.size(0), k = routing.experts.size(1);
  const std::int64_t D = x.size(1), A = T * k;
  if (A == 0) return at::zeros_like(x);
  const at::TensorOptions index = routing.experts.options().dtype(at::kLong);
  at::Tensor bucket = routing.experts.reshape({-1}).to(at::kLong);
  at::Tensor kept = routing.kept.defined() ? routing.kept.reshape({-1}).to(at::kBool)
                                           : at::ones({A}, index.dtype(at::kBool));
  // Dropped assignments go to an extra bucket E, sorted last.
  bucket = bucket.masked_fill(kept.logical_not(), E);
  const at::Tensor order = std::get<1>(at::sort(bucket, /*stable=*/true, 0, false));
  const at::Tensor token = at::div(order, k, "trunc");
  const at::Tensor sorted_kept = kept.index_select(0, order);
  // back[slot] = grouped row of that (token, choice): the combine gathers a token's k rows.
  const at::Tensor back = at::empty_like(order).scatter_(0, order, at::arange(A, index));
  const at::Tensor weight = routing.weights.reshape({-1}).index_select(0, order);
  const at::Tensor xs = x.index_select(0, token);  // [A, D], dropped rows last

  const at::Tensor counts =
      at::zeros({E + 1}, index).scatter_add_(0, bucket, at::ones_like(bucket));
  at::Tensor ys;  // [A, D]: every kept row's expert output, anything in dropped rows
  if (use_grouped(x, products)) {
    try {
      const at::Tensor ends = counts.narrow(0, 0, E).cumsum(0).to(at::kInt);
      const at::Tensor expert = bucket.index_select(0, order).clamp_max(E - 1);
      const at::Tensor h = grouped_linear(xs, w1, ends, b1.index_select(0, expert));
      ys = grouped_linear(at::gelu(h), w2, ends, b2.index_select(0, expert));
    } catch (const c10::Error&) {
      if (products == DeviceProducts::grouped) throw;
      g_grouped_refused = true;  // the per-expert products below, from now on
    }
  }
  if (!ys.defined()) {
    const at::Tensor host = counts.to(at::kCPU);  // the one host read: the expert sizes
    std::vector<std::int64_t> sizes(host.data_ptr<std::int64_t>(),
                                    host.data_ptr<std::int64_t>() + E + 1);
    const auto parts = xs.split_with_sizes(sizes);
    std::vector<at::Tensor> outputs;
    for (std::int64_t e = 0; e < E; ++e)
      if (sizes[e] > 0)
        outputs.push_back(at::addmm(b2.select(0, e),
                                    at::gelu(at::addmm(b1.select(0, e), parts[e], w1.select(0, e))),
                                    w2.select(0, e)));
    if (sizes[E] > 0) outputs.push_back(at::zeros({sizes[E], D}, xs.options()));
    ys = outputs.size() == 1 ? outputs.front() : at::cat(outputs);
  }
  // where(), not a product: a dropped row holds no output (grouped: unwritten memory).
  const at::Tensor weighted =
      at::where(sorted_kept.unsqueeze(1), ys * weight.unsqueeze(1).to(ys.scalar_type()),
                at::zeros({}, ys.options()));
  const at::Tensor picked = weighted.index_select(0, back);
  return k == 1 ? picked : picked.view({T, k, D}).sum(1);
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

at::Tensor moe::dispatch_combine_blocked(const at::Tensor& x, const Routing& routing,
                                         const at::Tensor& w1, const at::Tensor& b1,
                                         const at::Tensor& w2, const at::Tensor& b2,
                                         std::int64_t block) {
  check_shapes(x, routing, w1, b1, w2, b2);
  const DispatchPlan plan = plan_dispatch(routing, w1.size(0));
  if (plan.assignments == 0) return at::zeros_like(x);
  return ExpertMlps::apply(x, grouped_weights(routing, plan, x.scalar_type()), w1, b1, w2, b2,
                           plan.token, plan.back, plan.sizes, block_rows(x, block));
}

at::Tensor dispatch_combine(const at::Tensor& x, const Routing& routing, const at::Tensor& w1,
                            const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2) {
  return moe::with_autocast(
      x, w1, b1, w2, b2,
      [&](const at::Tensor& x_, const at::Tensor& w1_, const at::Tensor& b1_, const at::Tensor& w2_,
          const at::Tensor& b2_) {
        // The CPU kernel (threads taking blocks of rows) for CPU tensors,
        // device operations elsewhere.
        if (!x_.is_cpu()) return moe::dispatch_combine_device(x_, routing, w1_, b1_, w2_, b2_);
        return moe::dispatch_combine_blocked(x_, routing, w1_, b1_, w2_, b2_, 0);
      });
}

at::Tensor blocked_mlp(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                       const at::Tensor& w2, const at::Tensor& b2, std::int64_t block) {
  if (x.dim() != 2 || w1.dim() != 2 || w1.size(0) != x.size(1) || w2.dim() != 2 ||
      w2.size(0) != w1.size(1) || w2.size(1) != x.size(1) || b1.numel() != w1.size(1) ||
      b2.numel() != x.size(1))
    throw std::invalid_argument(
        "blocked_mlp: needs x [T, D], w1 [D, H], b1 [H], w2 [H, D], b2 [D]");
  if (x.size(0) == 0) return at::zeros_like(x);
  // The dense MLP is one expert that every row uses, in order.
  return moe::with_autocast(x, w1, b1, w2, b2,
                            [&](const at::Tensor& x_, const at::Tensor& w1_, const at::Tensor& b1_,
                                const at::Tensor& w2_, const at::Tensor& b2_) {
                              const at::Tensor none = at::empty({0}, x_.options());
                              return moe::ExpertMlps::apply(
                                  x_, none, w1_.unsqueeze(0), b1_.reshape({1, -1}),
                                  w2_.unsqueeze(0), b2_.reshape({1, -1}), none.to(at::kLong),
                                  none.to(at::kLong), std::vector<std::int64_t>{x_.size(0)},
                                  moe::block_rows(x_, block));
                            });
}

}  // namespace wb
