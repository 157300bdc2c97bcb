// k-NN and linear-probe evaluators, and the shared pieces they use (eval_tools.h): batched
// linear heads, class-balanced draws.
#include <ATen/ATen.h>
#include <doctest/doctest.h>

#include <cmath>
#include <set>

#include "test_eval_helpers.h"
#include "workbench/eval_tools.h"

using wbtest::FakeContext;
using wbtest::run_evaluator;

namespace {

wb::FeatureSet points(const std::vector<std::vector<float>>& rows,
                      const std::vector<std::int64_t>& labels) {
  std::vector<float> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  const auto n = static_cast<std::int64_t>(rows.size());
  return {at::tensor(flat).view({n, -1}), at::tensor(labels, at::TensorOptions().dtype(at::kLong))};
}

}  // namespace

TEST_CASE("knn: far-apart clusters are classified almost perfectly") {
  FakeContext ctx;
  ctx.set_features(wb::Split::Train, wbtest::clusters({100, 100, 100, 100}, 8, 8.0, 1));
  ctx.set_features(wb::Split::Test, wbtest::clusters({50, 50, 50, 50}, 8, 8.0, 2));
  const wb::EvalResult r = run_evaluator("knn", ctx, {{"chunk", std::int64_t{7}}});
  CHECK(r.scalars.at("top1") >= 99.0);
  CHECK(r.scalars.at("top5") == doctest::Approx(100.0));
}

TEST_CASE("knn: votes are weighted by exp(similarity / tau) over the k nearest") {
  // Bank on the unit circle; the query (1, 0) has similarities 1, 0.6, 0.6, -1, 0.
  FakeContext ctx;
  ctx.set_features(wb::Split::Train,
                   points({{1, 0}, {0.6f, 0.8f}, {0.6f, -0.8f}, {-1, 0}, {0, 2}}, {0, 1, 1, 0, 0}));
  ctx.set_features(wb::Split::Test, points({{3, 0}}, {0}));  // normalised to (1, 0)
  auto top1 = [&](std::int64_t k, double tau) {
    return run_evaluator("knn", ctx, {{"k", k}, {"tau", tau}}).scalars.at("top1");
  };
  // k = 3: neighbours 1 (class 0), 0.6 and 0.6 (class 1). Hand computation of the votes:
  //   tau 0.07: class 0 e^(1/0.07) = 1.6e6 > class 1 2 e^(0.6/0.07) = 1.05e4 -> class 0
  //   tau 1:    class 0 e^1 = 2.718 < class 1 2 e^0.6 = 3.644 -> class 1 (plain majority too)
  CHECK(std::exp(1 / 0.07) > 2 * std::exp(0.6 / 0.07));
  CHECK(top1(3, 0.07) == doctest::Approx(100.0));
  CHECK(top1(3, 1.0) == doctest::Approx(0.0));
  // k = 5 adds the class-0 points at -1 and 0: e^1 + e^-1 + e^0 = 4.086 > 3.644 -> class 0.
  CHECK(std::exp(1.0) + std::exp(-1.0) + 1.0 > 2 * std::exp(0.6));
  CHECK(top1(5, 1.0) == doctest::Approx(100.0));
}

TEST_CASE("linear heads: one batched step equals separate per-head SGD steps") {
  wb::LinearHeadOptions o;
  o.lrs = {0.5, 2.0};
  o.batch_norm = false;
  o.seed = 3;
  wb::LinearHeads heads(3, 4, o);
  const at::Tensor w0 = heads.weight().clone(), b0 = heads.bias().clone();
  const at::Tensor x = at::randn({5, 3});
  const at::Tensor y = at::tensor(std::vector<std::int64_t>{0, 3, 1, 1, 2});
  heads.set_schedule(2);  // step 0 of a 2-step cosine: the full lr
  const auto loss = heads.step(x, y);
  for (std::int64_t h = 0; h < 2; ++h) {
    // The same step through autograd, head by head.
    at::Tensor w = w0[h].clone().requires_grad_(true), b = b0[h].clone().requires_grad_(true);
    const at::Tensor ce = at::nll_loss(at::log_softmax(at::matmul(x, w) + b, 1), y);
    ce.backward();
    CHECK(loss[h] == doctest::Approx(ce.item<double>()).epsilon(1e-5));
    const double lr = o.lrs[h];
    CHECK(at::allclose(heads.weight()[h], w.detach() - lr * w.grad(), 1e-5, 1e-6));
    CHECK(at::allclose(heads.bias()[h], b.detach() - lr * b.grad(), 1e-5, 1e-6));
  }
}

TEST_CASE("linear heads: batch norm without affine uses batch statistics, then running ones") {
  wb::LinearHeadOptions o;
  o.lrs = {0.1};
  o.bn_momentum = 1.0;  // running statistics = those of the last batch
  wb::LinearHeads heads(2, 2, o);
  const at::Tensor x = at::tensor(std::vector<float>{1, 10, 3, 30, 5, 50}).view({3, 2});
  heads.step(x, at::tensor(std::vector<std::int64_t>{0, 1, 0}));
  // Evaluation normalises with mean (3, 30) and unbiased var (4, 400): x = (3, 30) -> 0,
  // so its logits are the bias alone.
  const at::Tensor centre = at::tensor(std::vector<float>{3, 30}).view({1, 2});
  CHECK(at::allclose(heads.logits(centre)[0][0], heads.bias()[0], 1e-5, 1e-6));
  // (5, 50) is one standard deviation up in both features.
  const at::Tensor up = at::tensor(std::vector<float>{5, 50}).view({1, 2});
  const at::Tensor expected =
      heads.weight()[0].sum(0) * (1 / std::sqrt(1 + 1e-5 / 4)) + heads.bias()[0];
  CHECK(at::allclose(heads.logits(up)[0][0], expected, 1e-4, 1e-5));
}

TEST_CASE("class-balanced draws: counts per class, disjoint, seeded, within the pool") {
  const auto labels_v = wbtest::labels_with_counts({50, 30, 20, 1});
  const at::Tensor labels = at::tensor(labels_v, at::TensorOptions().dtype(at::kLong));
  const wb::Draw d = wb::draw_fraction(labels, 0.1, 7);
  auto counts = [&](const std::vector<std::int64_t>& idx) {
    return wb::class_counts(labels.index_select(0, at::tensor(idx)), 4);
  };
  CHECK(counts(d.drawn) == std::vector<std::int64_t>{5, 3, 2, 1});  // at least one per class
  CHECK(counts(d.rest) == std::vector<std::int64_t>{45, 27, 18, 0});
  CHECK(d.drawn == wb::draw_fraction(labels, 0.1, 7).drawn);
  CHECK(d.drawn != wb::draw_fraction(labels, 0.1, 8).drawn);
  // Never the whole class when it has two or more items.
  CHECK(counts(wb::draw_fraction(labels, 1.0, 1).drawn) ==
        std::vector<std::int64_t>{49, 29, 19, 1});
  // From a pool: only pool items, per class of the pool.
  const wb::Draw p = wb::draw_fraction(labels, d.rest, 0.2, 3);
  CHECK(counts(p.drawn) == std::vector<std::int64_t>{9, 5, 4, 0});
  std::set<std::int64_t> pool(d.rest.begin(), d.rest.end());
  for (auto i : p.drawn) CHECK(pool.count(i) == 1);
  CHECK(p.drawn.size() + p.rest.size() == d.rest.size());
  const wb::Draw s = wb::draw_shots(labels, 4, 0);
  CHECK(counts(s.drawn) == std::vector<std::int64_t>{4, 4, 4, 1});
}

TEST_CASE("linear_probe: far-apart clusters, every reported number in range") {
  FakeContext ctx;
  ctx.set_features(wb::Split::Train, wbtest::clusters({100, 100, 100, 100}, 16, 6.0, 3));
  ctx.set_features(wb::Split::Test, wbtest::clusters({50, 50, 50, 50}, 16, 6.0, 4));
  const wb::EvalResult r =
      run_evaluator("linear_probe", ctx, {{"epochs", std::int64_t{10}}, {"augment", false}});
  CHECK(r.scalars.at("top1") >= 99.0);
  CHECK(r.scalars.at("val_top1") >= 97.5);
  CHECK(r.arrays.at("val_top1_per_lr").numel() == 8);
  const auto lrs = wbtest::values(r.arrays.at("lrs"));
  const auto val = wbtest::values(r.arrays.at("val_top1_per_lr"));
  const auto best = std::max_element(val.begin(), val.end()) - val.begin();
  CHECK(r.scalars.at("lr") == lrs[static_cast<std::size_t>(best)]);
}

TEST_CASE("linear_probe: the head is chosen on validation data, never on the test split") {
  // Dimension 1 (0.3 s) always tells the class; dimension 0 (s) does for 80 % of the training
  // images and is reversed for the rest. A head that barely moved from zero (tiny lr) follows
  // the mean gradient, mostly dimension 0: 80 % on validation. A converged head must use
  // dimension 1 to get the reversed images right: 100 % on validation. The test images have
  // both dimensions disagreeing and labels following dimension 0: the converged head gets 0 %,
  // the timid one 100 %. Choosing on the test split would report 100 %.
  std::vector<std::vector<float>> train_rows, test_rows;
  std::vector<std::int64_t> train_labels, test_labels;
  std::mt19937_64 rng(5);
  std::normal_distribution<float> noise(0.f, 0.02f);
  for (int i = 0; i < 1000; ++i) {
    const std::int64_t y = i % 2;
    const float s = y == 0 ? 1.f : -1.f;
    const bool reversed = (i / 2) % 5 == 0;
    train_rows.push_back({(reversed ? -s : s) + noise(rng), 0.3f * s + noise(rng)});
    train_labels.push_back(y);
  }
  for (int i = 0; i < 100; ++i) {
    const std::int64_t y = i % 2;
    const float s = y == 0 ? 1.f : -1.f;
    test_rows.push_back({s, -s});
    test_labels.push_back(y);
  }
  FakeContext ctx;
  ctx.set_features(wb::Split::Train, points(train_rows, train_labels));
  ctx.set_features(wb::Split::Test, points(test_rows, test_labels));
  const wb::EvalResult r = run_evaluator("linear_probe", ctx,
                                         {{"lrs", std::vector<double>{1e-3, 3.0}},
                                          {"augment", false},
                                          {"batch_norm", false},
                                          {"epochs", std::int64_t{40}},
                                          {"batch", std::int64_t{100}}});
  const auto val = wbtest::values(r.arrays.at("val_top1_per_lr"));
  CHECK(val[0] > 65.0);  // about 80: the construction works as intended
  CHECK(val[0] < 90.0);
  CHECK(val[1] == doctest::Approx(100.0));
  CHECK(r.scalars.at("lr") == 3.0);
  CHECK(r.scalars.at("top1") == doctest::Approx(0.0));
  // 3 is the largest rate of the grid: flagged, in the results and in the log.
  CHECK(r.scalars.at("lr_at_edge") == 1);
  CHECK(ctx.first("info linear_probe: 900 train / 100 val") < ctx.events.size());
  CHECK(ctx.events[ctx.first("info linear_probe: 900 train / 100 val")].find(
            "chose lr 3, at the edge of the grid") != std::string::npos);
  // The test split was read once, after the choice was logged.
  CHECK(ctx.first("features  test") > ctx.first("info linear_probe: 900 train / 100 val"));
  CHECK(std::count(ctx.events.begin(), ctx.events.end(), "features  test") == 1);
}

TEST_CASE("at_grid_edge: the smallest or largest value of a grid, in any order") {
  const std::vector<double> grid = {0.3, 0.01, 30.0, 1.0};
  CHECK(wb::at_grid_edge(grid, 1));
  CHECK(wb::at_grid_edge(grid, 2));
  CHECK_FALSE(wb::at_grid_edge(grid, 0));
  CHECK_FALSE(wb::at_grid_edge(grid, 3));
  CHECK_FALSE(wb::at_grid_edge({0.1}, 0));  // one value: no grid to widen
  CHECK_FALSE(wb::at_grid_edge(grid, 7));
}

TEST_CASE("linear_probe and knn with views [0, 1]: one evaluation per view, view 1 suffixed") {
  FakeContext ctx;
  ctx.set_features(wb::Split::Train, wbtest::clusters({60, 60}, 8, 6.0, 3));
  ctx.set_features(wb::Split::Test, wbtest::clusters({20, 20}, 8, 6.0, 4));
  const wb::EvalResult r = run_evaluator("linear_probe", ctx,
                                         {{"epochs", std::int64_t{5}},
                                          {"augment", false},
                                          {"views", std::vector<std::int64_t>{0, 1}}});
  CHECK(r.scalars.count("top1") == 1);
  CHECK(r.scalars.count("top1_view1") == 1);
  CHECK(r.scalars.count("lr_view1") == 1);
  CHECK(r.arrays.count("val_top1_per_lr_view1") == 1);
  // Features were asked for per view: view 0 first, then view 1.
  CHECK(ctx.first("features  train") < ctx.first("features  train view 1"));
  CHECK(ctx.first("features  test view 1") < ctx.events.size());
  const wb::EvalResult k = run_evaluator("knn", ctx, {{"views", std::vector<std::int64_t>{1}}});
  CHECK(k.scalars.count("top1") == 0);
  CHECK(k.scalars.count("top1_view1") == 1);
}
