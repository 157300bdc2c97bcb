// What OGAR's gradient does to the gate logits (docs/crmoe.md, "What OGAR's gradient can change"),
// on a hand-sized step whose online gate probabilities are softmax(z) of leaf logits z:
// - with sparse gate vectors (the paper's G(x), eq. 4-5) the L2-normalised vector of a token
//   depends only on the differences of its chosen logits, so OGAR sends zero gradient (up to
//   rounding) to the logits of the experts a token did not choose, and the gradients on its
//   chosen logits sum to zero: by its own gradient OGAR can shift weight between the chosen
//   experts (and so push one out of the top-k), never pull a particular unchosen expert in;
// - a positive pair whose top-k sets are disjoint has cosine 0 whatever the weights, and sends
//   no gradient at all: only negatives act on such a token;
// - with dense gate vectors (the softmax, or the logits as the public reference code uses) every
//   logit receives gradient.
// The autograd gradients are checked against central differences of the plain-loop reference
// (test_ogar_helpers.h), an independent computation of the same loss.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "test_ogar_helpers.h"

using namespace crmoe_test;

namespace {

struct LogitStep {
  HandStep h;
  std::vector<std::vector<at::Tensor>> logits;  // [view][layer] [T, E], leaves, double

  // Three images with valid and invalid patch pairs (as test_ogar.cpp's mixed step); online
  // probabilities softmax(z) of random logits, momentum ones random softmaxes.
  explicit LogitStep(std::uint64_t seed) {
    h.views[0] =
        View{{{0, 0, 1, 1}, {0.05, 0.1, 0.6, 0.7}, {0, 0, 0.4, 0.4}}, {false, false, true}};
    h.views[1] =
        View{{{0, 0, 1, 1}, {0.3, 0.2, 0.65, 0.75}, {0.6, 0.55, 0.4, 0.45}}, {true, false, false}};
    h.make(seed);
    const std::int64_t T = h.B * h.tokens_per_image();
    logits.assign(2, {});
    for (int v = 0; v < 2; ++v)
      for (std::int64_t l = 0; l < h.layers; ++l) {
        logits[v].push_back(at::randn({T, h.E}, at::kDouble).requires_grad_(true));
        h.momentum_probs[v][l] = at::softmax(at::randn({T, h.E}, at::kDouble), 1);
      }
    refresh();
  }

  void refresh() {
    for (int v = 0; v < 2; ++v)
      for (std::int64_t l = 0; l < h.layers; ++l)
        h.online_probs[v][l] = at::softmax(logits[v][l], 1);
  }

  // Autograd gradients of the plugin's loss with respect to every logit.
  void backward(const OgarSettings& s) {
    for (auto& v : logits)
      for (auto& z : v) z.mutable_grad() = at::Tensor();
    refresh();
    OneRank comm;
    auto loss = make_ogar(plugins(), s, "overlap", overlap_params(), h.g);
    loss->compute(h.state(&comm)).value.backward();
  }

  // Central difference of the plain-loop reference at one logit.
  double numeric(const OgarSettings& s, int v, std::int64_t l, std::int64_t t, std::int64_t e) {
    const double eps = 1e-6;
    auto value_at = [&](double delta) {
      at::Tensor z = logits[v][l].detach().clone();
      z[t][e] += delta;
      at::Tensor saved = h.online_probs[v][l];
      h.online_probs[v][l] = at::softmax(z, 1);
      const double out = ogar_reference(h, s, [this](int a, std::int64_t) {
                           return overlap_match(h.views[a], h.views[1 - a], 2, 0.2);
                         }).value;
      h.online_probs[v][l] = saved;
      return out;
    };
    return (value_at(eps) - value_at(-eps)) / (2 * eps);
  }

  static wb::Params overlap_params() {
    wb::Params p = plugins().defaults(wb::Kind::Matcher, "overlap");
    p.set("lambda", 0.2);
    return p;
  }
};

// The top-k experts of each row of z, as a [T, E] mask.
at::Tensor chosen(const at::Tensor& z, std::int64_t k) {
  const at::Tensor e = std::get<1>(z.detach().topk(k, 1));
  return at::zeros_like(z, z.options().dtype(at::kBool)).scatter(1, e, true);
}

}  // namespace

TEST_CASE("ogar gradients: autograd equals central differences of the reference, each reading") {
  for (int vector : {0, 1, 2}) {  // sparse, dense, logits
    CAPTURE(vector);
    LogitStep step(21);
    OgarSettings s;
    s.dense = vector == 1;
    s.logits = vector == 2;
    s.weight = 1;
    step.backward(s);
    double largest = 0;
    for (int v = 0; v < 2; ++v)
      for (std::int64_t l = 0; l < step.h.layers; ++l) {
        const at::Tensor& z = step.logits[v][l];
        REQUIRE(z.grad().defined());
        for (std::int64_t t = 0; t < z.size(0); ++t)
          for (std::int64_t e = 0; e < z.size(1); ++e) {
            const double g = z.grad()[t][e].item<double>();
            const double n = step.numeric(s, v, l, t, e);
            CHECK(std::fabs(g - n) <= 1e-7 + 1e-5 * std::fabs(n));
            largest = std::max(largest, std::fabs(g));
          }
      }
    CHECK(largest > 1e-3);  // the comparison is not between zeros
  }
}

TEST_CASE(
    "ogar gradients: sparse gate vectors leave unchosen logits untouched, chosen ones sum "
    "to zero, dense ones reach every logit") {
  LogitStep step(22);
  OgarSettings s;
  s.weight = 1;
  step.backward(s);
  for (int v = 0; v < 2; ++v)
    for (std::int64_t l = 0; l < step.h.layers; ++l) {
      const at::Tensor& z = step.logits[v][l];
      const at::Tensor in_topk = chosen(z, step.h.k), g = z.grad();
      // Zero (up to rounding: the softmax backward subtracts two equal sums) where the token
      // did not choose the expert.
      const double largest = g.abs().max().item<double>();
      CHECK(largest > 1e-3);
      CHECK(g.masked_select(in_topk.logical_not()).abs().max().item<double>() <= 1e-12 * largest);
      // Along the chosen logits only the difference matters: the gradients cancel per token.
      CHECK(g.sum(1).abs().max().item<double>() <= 1e-12 * largest);
    }

  for (int vector : {1, 2}) {  // dense softmax; logits (the reference code's)
    CAPTURE(vector);
    s.dense = vector == 1;
    s.logits = vector == 2;
    step.backward(s);
    for (int v = 0; v < 2; ++v)
      for (std::int64_t l = 0; l < step.h.layers; ++l) {
        const at::Tensor& z = step.logits[v][l];
        const at::Tensor unchosen = z.grad().masked_select(chosen(z, step.h.k).logical_not());
        // Unchosen logits of tokens whose loss terms are live get gradient.
        CHECK((unchosen.abs() > 1e-9).to(at::kDouble).mean().item<double>() > 0.5);
      }
  }
}

TEST_CASE("ogar gradients: a positive pair without a shared expert sends no gradient (sparse)") {
  LogitStep step(23);
  // Image 0's CLS token chooses experts {0, 1} in the online encoder and {2, 3} in the momentum
  // encoder, in both views and layers.
  for (int v = 0; v < 2; ++v)
    for (std::int64_t l = 0; l < step.h.layers; ++l) {
      at::NoGradGuard no_grad;
      step.logits[v][l][0].copy_(at::tensor({2.0, 1.0, 0.0, -1.0}, at::kDouble));
      step.h.momentum_probs[v][l][0].copy_(
          at::softmax(at::tensor({-1.0, 0.0, 1.0, 2.0}, at::kDouble), 0));
    }
  OgarSettings s;
  s.weight = 1;
  s.alpha = 0;  // the CLS term alone
  s.negatives = false;
  step.backward(s);
  for (int v = 0; v < 2; ++v)
    for (std::int64_t l = 0; l < step.h.layers; ++l) {
      const at::Tensor g = step.logits[v][l].grad();
      CHECK(g[0].abs().max().item<double>() == 0.0);  // cosine 0 whatever the two weights
      const std::int64_t tpi = step.h.tokens_per_image();
      CHECK(g[tpi].abs().max().item<double>() + g[2 * tpi].abs().max().item<double>() > 0);
    }
  // With negatives the same token is pushed away from other images' keys that share an
  // expert with it; dense vectors also pull it towards its positive.
  for (bool dense : {false, true}) {
    CAPTURE(dense);
    s.negatives = !dense;
    s.dense = dense;
    step.backward(s);
    double moved = 0;
    for (int v = 0; v < 2; ++v)
      for (std::int64_t l = 0; l < step.h.layers; ++l)
        moved += step.logits[v][l].grad()[0].abs().sum().item<double>();
    CHECK(moved > 0);
  }
}

TEST_CASE(
    "ogar gradients: a positive pair sharing only its first expert sharpens a sparse routing, "
    "a dense one pulls in the partner's second expert") {
  LogitStep step(24);
  // Image 0's CLS token chooses experts {0, 1} online, its key {0, 2}: they share the first.
  for (int v = 0; v < 2; ++v)
    for (std::int64_t l = 0; l < step.h.layers; ++l) {
      at::NoGradGuard no_grad;
      step.logits[v][l][0].copy_(at::tensor({2.0, 1.0, 0.0, -1.0}, at::kDouble));
      step.h.momentum_probs[v][l][0].copy_(
          at::softmax(at::tensor({2.0, -1.0, 1.0, -2.0}, at::kDouble), 0));
    }
  OgarSettings s;
  s.weight = 1;
  s.alpha = 0;          // the CLS term alone
  s.negatives = false;  // the positive pair alone: loss = -cos(q, k)
  step.backward(s);
  for (int v = 0; v < 2; ++v)
    for (std::int64_t l = 0; l < step.h.layers; ++l) {
      const at::Tensor g = step.logits[v][l].grad()[0];
      // Sparse: cos = q_0 k_0 grows as the second weight shrinks, so a descent step raises the
      // shared first expert's logit and lowers the second one's by as much; expert 2, which
      // the key chose, gets nothing.
      CHECK(g[0].item<double>() < -1e-3);
      CHECK(g[1].item<double>() > 1e-3);
      const double size = std::fabs(g[0].item<double>());
      CHECK(std::fabs(g[0].item<double>() + g[1].item<double>()) <= 1e-12 * size);
      CHECK(std::fabs(g[2].item<double>()) <= 1e-12 * size);
      CHECK(std::fabs(g[3].item<double>()) <= 1e-12 * size);
    }
  s.dense = true;
  step.backward(s);
  for (int v = 0; v < 2; ++v)
    for (std::int64_t l = 0; l < step.h.layers; ++l)
      // Dense: the descent step raises the logit of expert 2, the key's second choice.
      CHECK(step.logits[v][l].grad()[0][2].item<double>() < -1e-3);
}
