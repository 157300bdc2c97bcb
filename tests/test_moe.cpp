// wb::MoeLayer and wb::dispatch_combine against a plain dense reference loop over experts:
// outputs and gradients with respect to the input, the expert weights and the gate weights.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "built_plugins.h"
#include "moe/dispatch.h"
#include "workbench/moe_layer.h"
#include "workbench/registry.h"

namespace {

using wb_test::plugins;

std::shared_ptr<wb::Gate> topk_gate(std::int64_t dim, std::int64_t experts, std::int64_t k,
                                    double eval_capacity_factor = 0) {
  wb::Params p = plugins().defaults(wb::Kind::Gate, "noisy_topk");
  p.set("k", k);
  if (eval_capacity_factor > 0) p.set("eval_capacity_factor", eval_capacity_factor);
  return plugins().make_gate("noisy_topk", p, wb::GateShape{dim, experts, 0});
}

// GELU written out (exact, erf-based), independent of at::gelu.
at::Tensor gelu_ref(const at::Tensor& h) {
  return 0.5 * h * (1 + at::erf(h / std::sqrt(2.0)));
}

// y = Σ_e c_e ⊙ expert_e(x) over all tokens, c_e = combine weight of expert e per token (mask).
at::Tensor dense_reference(const at::Tensor& x, const at::Tensor& experts,
                           const at::Tensor& weights, const at::Tensor& kept, const at::Tensor& w1,
                           const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2) {
  at::Tensor y = at::zeros_like(x);
  for (std::int64_t e = 0; e < w1.size(0); ++e) {
    at::Tensor c = at::zeros({x.size(0)}, x.options());
    for (std::int64_t j = 0; j < experts.size(1); ++j)
      c = c + weights.select(1, j) *
                  (experts.select(1, j).eq(e) & kept.select(1, j)).to(x.scalar_type());
    const at::Tensor out = at::matmul(gelu_ref(at::matmul(x, w1[e]) + b1[e]), w2[e]) + b2[e];
    y = y + c.unsqueeze(1) * out;
  }
  return y;
}

void check_close(const at::Tensor& a, const at::Tensor& b, double tol = 1e-9) {
  REQUIRE(a.defined());
  REQUIRE(b.defined());
  REQUIRE(a.sizes() == b.sizes());
  CHECK((a - b).abs().max().item<double>() < tol);
}

struct Case {
  std::int64_t B, N, D, H, E, k;
  double capacity;  // eval capacity factor; 0 = dropless
};

}  // namespace

TEST_CASE("MoeLayer: outputs and gradients equal a dense masked reference (float64)") {
  for (const Case c : {Case{3, 4, 5, 7, 4, 2, 0}, Case{3, 4, 5, 7, 4, 2, 0.5},
                       Case{2, 5, 4, 6, 3, 1, 0}, Case{2, 3, 4, 3, 5, 3, 0.7}}) {
    CAPTURE(c.E);
    CAPTURE(c.k);
    CAPTURE(c.capacity);
    auto layer =
        std::make_shared<wb::MoeLayer>(c.D, c.H, c.E, topk_gate(c.D, c.E, c.k, c.capacity));
    layer->to(at::kDouble);
    {  // non-zero biases so their gradients and the dropped-token path are exercised
      at::NoGradGuard no_grad;
      layer->b1_.normal_();
      layer->b2_.normal_();
    }
    const at::Tensor x = at::randn({c.B, c.N, c.D}, at::kDouble).requires_grad_(true);
    const at::Tensor probe = at::randn({c.B, c.N, c.D}, at::kDouble);
    wb::RoutingContext context;
    context.training = false;
    auto [y, routing] = layer->forward(x, context);
    (y * probe).sum().backward();
    if (c.capacity > 0) CHECK_FALSE(routing.kept.all().item<bool>());

    // Reference: the same parameters, the gate recomputed plainly, every expert on every token.
    const at::Tensor W =
        layer->gate().named_parameters()["weight"].detach().clone().requires_grad_(true);
    const at::Tensor w1 = layer->w1_.detach().clone().requires_grad_(true);
    const at::Tensor b1 = layer->b1_.detach().clone().requires_grad_(true);
    const at::Tensor w2 = layer->w2_.detach().clone().requires_grad_(true);
    const at::Tensor b2 = layer->b2_.detach().clone().requires_grad_(true);
    const at::Tensor xr = x.detach().clone().requires_grad_(true);
    const at::Tensor tokens = xr.reshape({-1, c.D});
    const at::Tensor probs = at::softmax(at::matmul(tokens, W.t()), 1);
    const at::Tensor weights = probs.gather(1, routing.experts) * routing.kept.to(at::kDouble);
    const at::Tensor yr =
        dense_reference(tokens, routing.experts, weights, routing.kept, w1, b1, w2, b2);
    (yr.view({c.B, c.N, c.D}) * probe).sum().backward();

    check_close(y, yr.view({c.B, c.N, c.D}));
    check_close(x.grad(), xr.grad());
    check_close(layer->w1_.grad(), w1.grad());
    check_close(layer->b1_.grad(), b1.grad());
    check_close(layer->w2_.grad(), w2.grad());
    check_close(layer->b2_.grad(), b2.grad());
    check_close(layer->gate().named_parameters()["weight"].grad(), W.grad());
    CHECK(W.grad().abs().sum().item<double>() > 0);
  }
}

TEST_CASE("dispatch variants agree: fused custom backward, plain autograd, masked loop") {
  at::manual_seed(3);  // data with a token whose every assignment is dropped (checked below)
  const std::int64_t T = 40, D = 6, H = 5, E = 5;
  auto gate = topk_gate(D, E, 2, 0.6);
  gate->to(at::kDouble);
  const at::Tensor x = at::randn({T, D}, at::kDouble);
  wb::GateInput in;
  in.image = at::arange(T, at::kLong);
  in.tokens_per_image = 1;
  in.training = false;
  const wb::Routing r = gate->route(x, in);
  REQUIRE_FALSE(r.kept.all().item<bool>());
  const at::Tensor w1 = at::randn({E, D, H}, at::kDouble), b1 = at::randn({E, H}, at::kDouble);
  const at::Tensor w2 = at::randn({E, H, D}, at::kDouble), b2 = at::randn({E, D}, at::kDouble);
  const at::Tensor probe = at::randn({T, D}, at::kDouble);

  using Fn = at::Tensor (*)(const at::Tensor&, const wb::Routing&, const at::Tensor&,
                            const at::Tensor&, const at::Tensor&, const at::Tensor&);
  std::vector<std::vector<at::Tensor>> results;
  // The fused dispatch runs three times: experts in sequence, experts spread over two threads,
  // and experts cut into blocks of 3 rows spread over two threads.
  auto blocks_of_3 = [](const at::Tensor& x, const wb::Routing& r, const at::Tensor& w1,
                        const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2) {
    return wb::moe::dispatch_combine_blocked(x, r, w1, b1, w2, b2, 3);
  };
  const int threads = at::get_num_threads();
  int run = 0;
  auto device_path = [](const at::Tensor& x, const wb::Routing& r, const at::Tensor& w1,
                        const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2) {
    return wb::moe::dispatch_combine_device(x, r, w1, b1, w2, b2,
                                            wb::moe::DeviceProducts::per_expert);
  };
  for (Fn f : {Fn(&wb::dispatch_combine), Fn(&wb::dispatch_combine), Fn(blocks_of_3),
               Fn(&wb::moe::dispatch_combine_autograd), Fn(device_path),
               Fn(&wb::moe::dispatch_combine_masked)}) {
    at::set_num_threads(run == 1 || run == 2 ? 2 : 1);
    ++run;
    std::vector<at::Tensor> leaves;
    for (const at::Tensor& t : {x, w1, b1, w2, b2})
      leaves.push_back(t.clone().requires_grad_(true));
    wb::Routing rr = r;
    rr.weights = r.weights.detach().clone().requires_grad_(true);
    const at::Tensor y = f(leaves[0], rr, leaves[1], leaves[2], leaves[3], leaves[4]);
    (y * probe).sum().backward();
    std::vector<at::Tensor> out{y.detach()};
    for (auto& l : leaves) out.push_back(l.grad());
    out.push_back(rr.weights.grad());
    results.push_back(out);
  }
  at::set_num_threads(threads);
  for (std::size_t v = 1; v < results.size(); ++v)
    for (std::size_t i = 0; i < results[0].size(); ++i) {
      CAPTURE(v);
      CAPTURE(i);
      check_close(results[v][i], results[0][i]);
    }
  // Tokens with every assignment dropped get exactly 0 from the layer.
  const at::Tensor none = r.kept.any(1).logical_not();
  REQUIRE(none.any().item<bool>());
  CHECK(results[0][0].index({none}).abs().max().item<double>() == 0.0);
}

// The GPU path (device-agnostic operations) and the CPU kernel, each against the dense masked
// reference written above (not against each other), values and gradients in float64, with and
// without dropped assignments, k = 1 to 3.
TEST_CASE("GPU dispatch path and CPU kernel equal the dense masked reference (float64)") {
  struct C {
    std::int64_t T, D, H, E, k;
    double capacity;
  };
  for (const C c : {C{30, 6, 5, 4, 2, 0}, C{30, 6, 5, 4, 2, 0.5}, C{17, 4, 3, 3, 1, 0.8},
                    C{12, 5, 4, 6, 3, 0}}) {
    CAPTURE(c.E);
    CAPTURE(c.k);
    CAPTURE(c.capacity);
    auto gate = topk_gate(c.D, c.E, c.k, c.capacity);
    gate->to(at::kDouble);
    const at::Tensor x0 = at::randn({c.T, c.D}, at::kDouble);
    wb::GateInput in;
    in.image = at::arange(c.T, at::kLong);
    in.tokens_per_image = 1;
    in.training = false;
    const wb::Routing r = gate->route(x0, in);
    if (c.capacity > 0) REQUIRE_FALSE(r.kept.all().item<bool>());
    const at::Tensor probe = at::randn({c.T, c.D}, at::kDouble);
    std::vector<at::Tensor> params{
        x0, at::randn({c.E, c.D, c.H}, at::kDouble), at::randn({c.E, c.H}, at::kDouble),
        at::randn({c.E, c.H, c.D}, at::kDouble), at::randn({c.E, c.D}, at::kDouble)};
    // Runs f on fresh leaves: output, then the gradients of x, w1, b1, w2, b2, combine weights.
    auto run = [&](auto f) {
      std::vector<at::Tensor> leaves;
      for (const at::Tensor& t : params) leaves.push_back(t.clone().requires_grad_(true));
      wb::Routing rr = r;
      rr.weights = r.weights.detach().clone().requires_grad_(true);
      const at::Tensor y = f(leaves, rr);
      (y * probe).sum().backward();
      std::vector<at::Tensor> out{y.detach()};
      for (auto& l : leaves) out.push_back(l.grad());
      out.push_back(rr.weights.grad());
      return out;
    };
    const auto ref = run([](const std::vector<at::Tensor>& l, const wb::Routing& rr) {
      return dense_reference(l[0], rr.experts, rr.weights, rr.kept, l[1], l[2], l[3], l[4]);
    });
    const auto device = run([](const std::vector<at::Tensor>& l, const wb::Routing& rr) {
      return wb::moe::dispatch_combine_device(l[0], rr, l[1], l[2], l[3], l[4],
                                              wb::moe::DeviceProducts::per_expert);
    });
    const auto kernel = run([](const std::vector<at::Tensor>& l, const wb::Routing& rr) {
      return wb::moe::dispatch_combine_blocked(l[0], rr, l[1], l[2], l[3], l[4], 0);
    });
    for (std::size_t i = 0; i < ref.size(); ++i) {
      CAPTURE(i);
      check_close(device[i], ref[i]);
      check_close(kernel[i], ref[i]);
    }
    CHECK(ref[6].abs().sum().item<double>() > 0);  // the gate's weights get a gradient
  }
}

TEST_CASE("dispatch plan: groups kept assignments by expert and sizes them") {
  wb::Routing r;
  r.experts = at::tensor(std::vector<long>{2, 0, 0, 1, 2, 1, 0, 2}, at::kLong).view({4, 2});
  r.kept =
      at::tensor(std::vector<long>{1, 1, 1, 0, 1, 1, 0, 1}, at::kLong).view({4, 2}).to(at::kBool);
  const auto plan = wb::moe::plan_dispatch(r, 3);
  CHECK(plan.sizes == std::vector<std::int64_t>{2, 1, 3});
  CHECK(plan.assignments == 6);
  // expert 0: slots 1, 2; expert 1: slot 5; expert 2: slots 0, 4, 7 (slots 3, 6 dropped)
  CHECK(at::equal(plan.slot, at::tensor(std::vector<long>{1, 2, 5, 0, 4, 7}, at::kLong)));
  CHECK(at::equal(plan.token, at::tensor(std::vector<long>{0, 1, 2, 0, 2, 3}, at::kLong)));
}

TEST_CASE("MoeLayer: parameters, initialisation and the routing it returns") {
  const std::int64_t D = 8, H = 16, E = 4;
  wb::MoeLayer layer(D, H, E, topk_gate(D, E, 2));
  const auto params = layer.named_parameters();
  for (const char* name : {"w1", "b1", "w2", "b2", "gate.weight"}) CHECK(params.contains(name));
  CHECK(layer.w1_.sizes() == at::IntArrayRef{E, D, H});
  CHECK(layer.w2_.sizes() == at::IntArrayRef{E, H, D});
  CHECK(layer.b1_.abs().max().item<double>() == 0.0);
  CHECK(layer.b2_.abs().max().item<double>() == 0.0);
  const double bound = std::sqrt(6.0 / (D + H));  // xavier uniform per expert matrix
  CHECK(layer.w1_.abs().max().item<double>() <= bound);
  CHECK(layer.w1_.abs().max().item<double>() > 0.8 * bound);
  CHECK(layer.experts() == E);
  CHECK(layer.hidden() == H);

  const at::Tensor x = at::randn({3, 5, D});
  wb::RoutingContext context;
  auto [y, r] = layer.forward(x, context);
  CHECK(y.sizes() == x.sizes());
  CHECK(r.tokens_per_image == 5);
  CHECK(r.tokens.sizes() == at::IntArrayRef{15, D});
  CHECK(r.experts.sizes() == at::IntArrayRef{15, 2});
  CHECK(r.num_experts() == E);
  CHECK_THROWS_AS(layer.forward(at::randn({3, D}), context), std::invalid_argument);
}

TEST_CASE("blocked_mlp equals the plain dense MLP, values and gradients") {
  const std::int64_t T = 30, D = 4, H = 6;
  const at::Tensor x0 = at::randn({T, D}, at::kDouble), probe = at::randn({T, D}, at::kDouble);
  // Weights laid out as nn::Linear stores them ([out, in]) and passed as transposed views.
  const at::Tensor fc1 = at::randn({H, D}, at::kDouble), fc2 = at::randn({D, H}, at::kDouble);
  const at::Tensor c1 = at::randn({H}, at::kDouble), c2 = at::randn({D}, at::kDouble);
  auto run = [&](bool blocked, std::int64_t block, int threads) {
    std::vector<at::Tensor> leaves;
    for (const at::Tensor& t : {x0, fc1, c1, fc2, c2})
      leaves.push_back(t.clone().requires_grad_(true));
    at::set_num_threads(threads);
    const at::Tensor y =
        blocked
            ? wb::blocked_mlp(leaves[0], leaves[1].t(), leaves[2], leaves[3].t(), leaves[4], block)
            : at::matmul(gelu_ref(at::matmul(leaves[0], leaves[1].t()) + leaves[2]),
                         leaves[3].t()) +
                  leaves[4];
    (y * probe).sum().backward();
    std::vector<at::Tensor> out{y.detach()};
    for (auto& l : leaves) out.push_back(l.grad());
    return out;
  };
  const int threads = at::get_num_threads();
  const auto reference = run(false, 0, 1);
  for (auto [block, n] : {std::pair{0, 1}, std::pair{7, 1}, std::pair{7, 2}, std::pair{1, 2}}) {
    CAPTURE(block);
    CAPTURE(n);
    const auto got = run(true, block, n);
    for (std::size_t i = 0; i < got.size(); ++i) check_close(got[i], reference[i]);
  }
  at::set_num_threads(threads);
  CHECK_THROWS_AS(wb::blocked_mlp(x0, fc1, c1, fc2.t(), c2), std::invalid_argument);
}

// The per-phase clocks of `workbench bench moe --profile`: switching them on changes no value or
// gradient, every phase the kernel runs is recorded, and switching them off stops the recording.
TEST_CASE("dispatch phase clocks: same results, every phase recorded, off when unset") {
  at::manual_seed(5);
  const std::int64_t T = 24, D = 5, H = 4, E = 3;
  auto gate = topk_gate(D, E, 2);
  gate->to(at::kDouble);
  const at::Tensor x0 = at::randn({T, D}, at::kDouble);
  wb::GateInput in;
  in.image = at::arange(T, at::kLong);
  in.tokens_per_image = 1;
  in.training = false;
  const wb::Routing r = gate->route(x0, in);
  const std::vector<at::Tensor> params{
      x0, at::randn({E, D, H}, at::kDouble), at::randn({E, H}, at::kDouble),
      at::randn({E, H, D}, at::kDouble), at::randn({E, D}, at::kDouble)};
  const at::Tensor probe = at::randn({T, D}, at::kDouble);
  auto run = [&] {
    std::vector<at::Tensor> l;
    for (const at::Tensor& t : params) l.push_back(t.clone().requires_grad_(true));
    wb::Routing rr = r;
    rr.weights = r.weights.detach().clone().requires_grad_(true);
    const at::Tensor y = wb::moe::dispatch_combine_blocked(l[0], rr, l[1], l[2], l[3], l[4], 4);
    (y * probe).sum().backward();
    std::vector<at::Tensor> out{y.detach(), rr.weights.grad()};
    for (auto& t : l) out.push_back(t.grad());
    return out;
  };
  const auto plain = run();
  wb::moe::PhaseTimes times;
  wb::moe::set_phase_times(&times);
  const auto timed = run();
  wb::moe::set_phase_times(nullptr);
  for (std::size_t i = 0; i < plain.size(); ++i) CHECK(at::equal(plain[i], timed[i]));
  std::vector<std::int64_t> seen;
  for (int p = 0; p < static_cast<int>(wb::moe::Phase::count); ++p) {
    CAPTURE(wb::moe::phase_name(static_cast<wb::moe::Phase>(p)));
    CHECK(times.ns[p] > 0);
    seen.push_back(times.ns[p]);
  }
  (void)run();  // off again: nothing more is added
  for (int p = 0; p < static_cast<int>(wb::moe::Phase::count); ++p) CHECK(times.ns[p] == seen[p]);
}

// The CPU kernel's blocks run on the intra-op threads: with two threads both take blocks. Fails
// where the kernel's at::parallel_for was compiled without OpenMP (it then runs its range on the
// calling thread alone, whatever at::set_num_threads says).
TEST_CASE("dispatch: the blocks of a pass run on every intra-op thread") {
  const int threads = at::get_num_threads();
  const at::Tensor x = at::randn({64, 4}, at::kDouble).requires_grad_(true);
  const at::Tensor w1 = at::randn({4, 6}, at::kDouble), b1 = at::randn({6}, at::kDouble);
  const at::Tensor w2 = at::randn({6, 4}, at::kDouble), b2 = at::randn({4}, at::kDouble);
  for (int n : {1, 2}) {
    CAPTURE(n);
    at::set_num_threads(n);
    wb::moe::PhaseTimes times;
    wb::moe::set_phase_times(&times);
    wb::blocked_mlp(x, w1, b1, w2, b2, 8).sum().backward();  // 8 blocks of 8 rows
    wb::moe::set_phase_times(nullptr);
    CHECK(times.threads == n);
  }
  at::set_num_threads(threads);
}
