// Expert dispatch: the kept (token, choice) assignments are sorted by expert once (one host sync
// for the expert sizes), every expert gathers its tokens and runs its two products on them, and
// the weighted outputs are added back to their tokens. A custom autograd function reuses the
// sorted order in the backward pass instead of recording a graph node per expert and operation.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "compat/torch_compat.h"
#include "moe/dispatch.h"
#include "workbench/moe_layer.h"

namespace wb {
namespace moe {

// Rows per block of expert work on the CPU: [1024, H] buffers stay in cache (measured with
// bench_moe at d = 192; see make_items).
constexpr std::int64_t kDefaultBlockRows = 1024;

namespace {

std::atomic<PhaseTimes*> g_phase_times{nullptr};

// Adds the time since the previous lap (or its construction) to a phase while profiling is on;
// reads no clock otherwise. One per thread and pass.
class Stopwatch {
 public:
  Stopwatch() : times_(g_phase_times.load(std::memory_order_relaxed)) {
    if (times_) last_ = Clock::now();
  }
  void lap(Phase phase) {
    if (!times_) return;
    const auto now = Clock::now();
    times_->ns[static_cast<int>(phase)] +=
        std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_).count();
    last_ = now;
  }
  void restart() {
    if (times_) last_ = Clock::now();
  }

 private:
  using Clock = std::chrono::steady_clock;
  PhaseTimes* times_;
  Clock::time_point last_;
};

}  // namespace

const char* phase_name(Phase phase) {
  static const char* const names[] = {
      "plan (sort, sizes, weights)", "gather rows",
      "product 1 (x w1 + b1)",       "activation (GELU)",
      "product 2 (a w2 + b2)",       "combine (weights, k rows/token)",
      "bwd: gather output grads",    "bwd: hidden grad (g w2', GELU')",
      "bwd: expert weight grads",    "bwd: input grad (gh w1')",
      "bwd: combine input grads"};
  static_assert(sizeof(names) / sizeof(names[0]) == static_cast<int>(Phase::count));
  return names[static_cast<int>(phase)];
}

void set_phase_times(PhaseTimes* times) {
  g_phase_times = times;
}

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
  PhaseTimes* const times = g_phase_times.load(std::memory_order_relaxed);
  if (!like.is_cpu() || threads < 2 || at::in_parallel_region()) {
    if (times && times->threads < 1) times->threads = 1;
    for (std::int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::vector<std::int64_t> order(n);
  for (std::int64_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int64_t a, std::int64_t b) { return items[a].rows > items[b].rows; });
  std::atomic<std::int64_t> next{0};
  std::atomic<int> started{0};
  at::parallel_for(0, threads, 1, [&](std::int64_t, std::int64_t) {
    ++started;
    at::NoGradGuard no_grad;  // grad mode is per thread; the caller's is off already
    for (auto i = next++; i < n; i = next++) f(order[i]);
  });
  if (times && times->threads < started) times->threads = started.load();
}

// out[t] = Σ_j weight[r]·rows[r] over r = back[t·k + j], j < k, for every token t (weight 1 when
// `weight` is undefined); r = A, a dropped assignment, adds nothing. On the CPU one parallel pass
// that reads each grouped row once: an index_select of the T·k rows and a sum over k would write
// and read a [T·k, D] buffer in between (index_add_ is a serial loop over the rows), and the
// weights folded in here spare the expert products a pass of their own.
at::Tensor combine_rows(const at::Tensor& rows, const at::Tensor& back, const at::Tensor& weight,
                        std::int64_t tokens) {
  const auto A = rows.size(0), D = rows.size(1), k = back.size(0) / tokens;
  if (!rows.is_cpu()) {
    at::Tensor r = weight.defined() ? rows * weight.unsqueeze(1) : rows;
    r = at::cat({r, at::zeros({1, D}, r.options())});
    const at::Tensor picked = r.index_select(0, back);
    return k == 1 ? picked : picked.view({tokens, k, D}).sum(1);
  }
  const at::Tensor src = rows.contiguous(), index = back.contiguous();
  const at::Tensor w = weight.defined() ? weight.contiguous() : weight;
  at::Tensor out = at::empty({tokens, D}, rows.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, rows.scalar_type(), "combine_rows", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const scalar_t* s = src.data_ptr<scalar_t>();
        const scalar_t* wp = w.defined() ? w.data_ptr<scalar_t>() : nullptr;
        const std::int64_t* b = index.data_ptr<std::int64_t>();
        scalar_t* o = out.data_ptr<scalar_t>();
        at::parallel_for(0, tokens, 64, [&](std::int64_t begin, std::int64_t end) {
          // Sums in acc_t: in place for float and double, in a row buffer for bf16 and half.
          constexpr bool direct = std::is_same<scalar_t, acc_t>::value;
          std::vector<acc_t> buffer(direct ? 0 : D);
          for (auto t = begin; t < end; ++t) {
            acc_t* acc = direct ? reinterpret_cast<acc_t*>(o + t * D) : buffer.data();
            bool first = true;
            for (std::int64_t j = 0; j < k; ++j) {
              const std::int64_t r = b[t * k + j];
              if (r >= A) continue;  // dropped
              const acc_t c = wp ? static_cast<acc_t>(wp[r]) : acc_t(1);
              const scalar_t* row = s + r * D;
              if (first)
                for (std::int64_t d = 0; d < D; ++d) acc[d] = c * static_cast<acc_t>(row[d]);
              else
                for (std::int64_t d = 0; d < D; ++d) acc[d] += c * static_cast<acc_t>(row[d]);
              first = false;
            }
            if (first) std::fill(acc, acc + D, acc_t(0));
            if (!direct)
              for (std::int64_t d = 0; d < D; ++d) o[t * D + d] = static_cast<scalar_t>(acc[d]);
          }
        });
      });
  return out;
}

// The backward of combine_rows for one block of grouped rows (CPU, contiguous tensors), in one
// pass over the token gradients it reads: gys[r] = weight[r]·grad[token[r]], the gradient at the
// unweighted expert output, and, when gw is defined, gw[r] = grad[token[r]]·y[r], the gradient of
// the combine weight (y: the unweighted expert outputs).
void output_grads(const at::Tensor& grad, const at::Tensor& token, const at::Tensor& weight,
                  const at::Tensor& y, const at::Tensor& gys, const at::Tensor& gw) {
  const auto n = token.size(0), D = grad.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, grad.scalar_type(), "output_grads", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const scalar_t* g = grad.data_ptr<scalar_t>();
        const scalar_t* w = weight.data_ptr<scalar_t>();
        const scalar_t* ys = y.data_ptr<scalar_t>();
        const std::int64_t* tk = token.data_ptr<std::int64_t>();
        scalar_t* out = gys.data_ptr<scalar_t>();
        scalar_t* gwp = gw.defined() ? gw.data_ptr<scalar_t>() : nullptr;
        for (std::int64_t r = 0; r < n; ++r) {
          const scalar_t* src = g + tk[r] * D;
          const acc_t c = static_cast<acc_t>(w[r]);
          scalar_t* dst = out + r * D;
          for (std::int64_t d = 0; d < D; ++d)
            dst[d] = static_cast<scalar_t>(c * static_cast<acc_t>(src[d]));
          if (gwp) {
            // Eight partial sums, which the compiler keeps in vector registers.
            const scalar_t* yr = ys + r * D;
            acc_t part[8] = {};
            std::int64_t d = 0;
            for (; d + 8 <= D; d += 8)
              for (int l = 0; l < 8; ++l)
                part[l] += static_cast<acc_t>(src[d + l]) * static_cast<acc_t>(yr[d + l]);
            acc_t dot = 0;
            for (int l = 0; l < 8; ++l) dot += part[l];
            for (; d < D; ++d) dot += static_cast<acc_t>(src[d]) * static_cast<acc_t>(yr[d]);
            gwp[r] = static_cast<scalar_t>(dot);
          }
        }
      });
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
    // Saved: x, weight, w1, w2, token, back, the unweighted outputs (if weighted), then h, a and
    // x_e (if gathered) per item.
    variable_list saved(7 + 3 * I);
    saved[0] = x, saved[1] = weight, saved[2] = w1, saved[3] = w2, saved[4] = token;
    saved[5] = back;
    // Every row's unweighted expert output; the weights are applied by the combine.
    at::Tensor out = gathered ? at::empty({token.size(0), x.size(1)}, x.options())
                              : at::empty_like(x, at::MemoryFormat::Contiguous);
    run_items(x, items, [&](std::int64_t i) {
      Stopwatch watch;
      const auto [e, off, n] = items[i];
      const at::Tensor xe =
          gathered ? x.index_select(0, token.narrow(0, off, n)) : x.narrow(0, off, n);
      watch.lap(Phase::gather);
      const at::Tensor h = at::addmm(b1.select(0, e), xe, w1.select(0, e));
      watch.lap(Phase::product1);
      const at::Tensor a = at::gelu(h);
      watch.lap(Phase::activation);
      at::Tensor rows = out.narrow(0, off, n);
      at::addmm_out(rows, b2.select(0, e), a, w2.select(0, e));
      saved[7 + 3 * i] = h, saved[8 + 3 * i] = a;
      if (gathered) saved[9 + 3 * i] = xe;  // kept: the backward needs it again
      watch.lap(Phase::product2);
    });
    if (weighted) saved[6] = out;  // the combine weights' gradient needs it
    ctx->save_for_backward(saved);
    ctx->saved_data["sizes"] = sizes;
    ctx->saved_data["block"] = block;
    Stopwatch watch;
    at::Tensor y = gathered   ? combine_rows(out, back, weighted ? weight : at::Tensor(), x.size(0))
                   : weighted ? out * weight.unsqueeze(1)
                              : out;
    watch.lap(Phase::combine);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Stopwatch watch;
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &w1 = saved[2], &w2 = saved[3];
    const at::Tensor &token = saved[4], &back = saved[5], &unweighted = saved[6];
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
      grad_rows = gathered ? at::empty({token.size(0), D}, x.options())
                           : at::empty_like(x, at::MemoryFormat::Contiguous);
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
    watch.lap(Phase::grad_experts);
    run_items(x, items, [&](std::int64_t i) {
      Stopwatch watch;
      const auto [e, off, n] = items[i];
      const at::Tensor &h = saved[7 + 3 * i], &a = saved[8 + 3 * i];
      at::Tensor gys;  // gradient at the unweighted expert output
      if (gathered && weighted && grad.is_cpu() && weight.is_contiguous()) {
        gys = at::empty({n, D}, grad.options());
        output_grads(grad, token.narrow(0, off, n), weight.narrow(0, off, n),
                     unweighted.narrow(0, off, n), gys,
                     want_weight ? grad_weight.narrow(0, off, n) : at::Tensor());
      } else {
        const at::Tensor gy =
            gathered ? grad.index_select(0, token.narrow(0, off, n)) : grad.narrow(0, off, n);
        gys = gy;
        if (weighted) {
          if (want_weight)
            grad_weight.narrow(0, off, n).copy_((gy * unweighted.narrow(0, off, n)).sum(1));
          gys = gy * weight.narrow(0, off, n).unsqueeze(1);
        }
      }
      watch.lap(Phase::grad_gather);
      const at::Tensor gh = at::gelu_backward(at::mm(gys, w2.select(0, e).t()), h);
      watch.lap(Phase::grad_hidden);
      if (want_experts) {
        const at::Tensor xe = gathered ? saved[9 + 3 * i] : x.narrow(0, off, n);
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
      watch.lap(Phase::grad_experts);
      if (want_x) {
        at::Tensor rows = grad_rows.narrow(0, off, n);
        at::mm_out(rows, gh, w1.select(0, e).t());
      }
      watch.lap(Phase::grad_input);
    });
    watch.restart();  // the blocks timed themselves
    at::Tensor grad_x;
    if (want_x)
      grad_x = gathered ? combine_rows(grad_rows, back, at::Tensor(), x.size(0)) : grad_rows;
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
    watch.lap(Phase::grad_combine);
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
  Stopwatch watch;
  const DispatchPlan plan = plan_dispatch(routing, w1.size(0));
  if (plan.assignments == 0) return at::zeros_like(x);
  const at::Tensor weight = grouped_weights(routing, plan, x.scalar_type());
  watch.lap(Phase::plan);
  return ExpertMlps::apply(x, weight, w1, b1, w2, b2, plan.token, plan.back, plan.sizes,
                           block_rows(x, block));
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
