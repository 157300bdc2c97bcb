// Losses moco and load_balance: MoCo v3's symmetric contrastive loss against a plain-loop
// reference (heads with batch-norm recomputed by hand, one and two ranks), the momentum
// projector's EMA, gradients, the fine-tuning head; the balance loss's sum over layers and mean
// over views, from the online encoder only.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "test_ogar_helpers.h"

using namespace crmoe_test;

namespace {

const std::int64_t kB = 6, kD = 5, kHidden = 7, kOut = 4;

std::shared_ptr<wb::Loss> make_moco(double weight = 1.0, bool freeze = true) {
  wb::Params p = plugins().defaults(wb::Kind::Loss, "moco");
  p.set("hidden", kHidden);
  p.set("out", kOut);
  p.set("weight", weight);
  p.set("random_patch_projection", freeze);
  return plugins().make_loss("moco", p, loss_context(plugins(), 2, kD));
}

Mat param(const wb::Loss& loss, const std::string& name) {
  // find() points into the dict named_parameters() returns: it must outlive the pointer.
  const auto params = loss.named_parameters();
  const at::Tensor* t = params.find(name);
  REQUIRE_MESSAGE(t != nullptr, "no parameter " << name);
  return t->dim() == 2 ? rows(*t) : Mat{rows(t->unsqueeze(0))[0]};
}

// y = x W^T
Mat linear(const Mat& x, const Mat& w) {
  Mat y(x.size(), Vec(w.size()));
  for (std::size_t i = 0; i < x.size(); ++i)
    for (std::size_t o = 0; o < w.size(); ++o) y[i][o] = dot(x[i], w[o]);
  return y;
}

// Training-mode batch norm: batch mean, biased variance, eps 1e-5, optional affine.
Mat batch_norm(const Mat& x, const Vec* gamma, const Vec* beta) {
  Mat y = x;
  const double n = static_cast<double>(x.size());
  for (std::size_t c = 0; c < x[0].size(); ++c) {
    double mean = 0, var = 0;
    for (const auto& r : x) mean += r[c] / n;
    for (const auto& r : x) var += (r[c] - mean) * (r[c] - mean) / n;
    for (std::size_t i = 0; i < x.size(); ++i) {
      y[i][c] = (x[i][c] - mean) / std::sqrt(var + 1e-5);
      if (gamma) y[i][c] = y[i][c] * (*gamma)[c] + (*beta)[c];
    }
  }
  return y;
}

Mat relu(Mat x) {
  for (auto& r : x)
    for (auto& v : r) v = std::max(0.0, v);
  return x;
}

// MoCo v3's _build_mlp by hand: Linear-BN-ReLU x (layers - 1), Linear, BN without affine.
Mat head(const wb::Loss& loss, const std::string& prefix, int layers, Mat x) {
  for (int i = 0; i < layers; ++i) {
    const std::string n = prefix + ".fc" + std::to_string(i) + ".weight";
    x = linear(x, param(loss, n));
    const std::string bn = prefix + ".bn" + std::to_string(i);
    if (i + 1 < layers) {
      const Vec g = param(loss, bn + ".weight")[0], b = param(loss, bn + ".bias")[0];
      x = relu(batch_norm(x, &g, &b));
    } else {
      CHECK(loss.named_parameters().find(bn + ".weight") == nullptr);  // affine = False
      x = batch_norm(x, nullptr, nullptr);
    }
  }
  return x;
}

// ctr(q, k) by loops; with `second_of_two`, rank 0's keys are this rank's in reverse order.
double ctr(const Mat& q, const Mat& k, double tau, bool second_of_two) {
  Mat keys;
  if (second_of_two)
    for (std::size_t j = k.size(); j-- > 0;) keys.push_back(unit(k[j]));
  for (const auto& r : k) keys.push_back(unit(r));
  const std::size_t offset = second_of_two ? k.size() : 0;
  double s = 0;
  for (std::size_t i = 0; i < q.size(); ++i) s += nce_term(unit(q[i]), keys, offset + i, tau);
  return s / static_cast<double>(q.size()) * 2 * tau;
}

struct MocoInputs {
  at::Tensor online[2], momentum[2];
  MocoInputs() {
    at::manual_seed(21);
    for (int v = 0; v < 2; ++v) {
      online[v] = at::randn({kB, kD}).requires_grad_(true);
      momentum[v] = at::randn({kB, kD});
    }
  }
  wb::StepState state(wb::Communicator* comm, bool swap = false) const {
    wb::StepState s;
    s.comm = comm;
    for (int v = 0; v < 2; ++v) {
      const int src = swap ? 1 - v : v;
      wb::BackboneOutput on, mo;
      on.cls = online[src];
      mo.cls = momentum[src];
      s.online.push_back(on);
      s.momentum.push_back(mo);
    }
    return s;
  }
  double reference(const wb::Loss& loss, bool second_of_two) const {
    Mat q[2], k[2];
    for (int v = 0; v < 2; ++v) {
      q[v] = head(loss, "predictor", 2, head(loss, "projector", 3, rows(online[v])));
      k[v] = head(loss, "momentum_projector", 3, rows(momentum[v]));
    }
    return ctr(q[0], k[1], 0.2, second_of_two) + ctr(q[1], k[0], 0.2, second_of_two);
  }
};

}  // namespace

TEST_CASE("moco: ctr(q1, k2) + ctr(q2, k1) equals a plain-loop reference, on one and two ranks") {
  const MocoInputs in;
  auto loss = make_moco(0.7);
  OneRank one;
  const wb::LossResult r = loss->compute(in.state(&one));
  const double ref = in.reference(*loss, false);
  CHECK(r.value.item<double>() == doctest::Approx(0.7 * ref).epsilon(1e-5));
  CHECK(r.metrics.at("ctr") == doctest::Approx(ref).epsilon(1e-5));
  CHECK(r.metrics.count("top1") == 1);
  // Symmetric in the two views.
  CHECK(loss->compute(in.state(&one, true)).value.item<double>() ==
        doctest::Approx(r.value.item<double>()).epsilon(1e-6));
  // Rank 1 of 2: twice the keys, own label offset by the local batch.
  SecondOfTwo two;
  const double ref2 = in.reference(*loss, true);
  CHECK(loss->compute(in.state(&two)).value.item<double>() ==
        doctest::Approx(0.7 * ref2).epsilon(1e-5));
  CHECK(ref2 != doctest::Approx(ref));
}

TEST_CASE("moco: hand vectors give the textbook InfoNCE value") {
  // ctr on known unit vectors without heads: q = e0, keys e0 (positive) and e1.
  // loss = -log(e^{1/t} / (e^{1/t} + e^{0})) * 2t.
  const double t = 0.2;
  const double expected = -std::log(std::exp(1 / t) / (std::exp(1 / t) + 1)) * 2 * t;
  CHECK(nce_term({1, 0}, {{1, 0}, {0, 1}}, 0, t) * 2 * t == doctest::Approx(expected));
}

TEST_CASE("moco: gradients reach the online heads and features, never the momentum projector") {
  const MocoInputs in;
  auto loss = make_moco();
  OneRank one;
  const wb::LossResult r = loss->compute(in.state(&one));
  r.value.backward();
  for (const auto& item : loss->named_parameters()) {
    CAPTURE(item.key());
    if (item.key().rfind("momentum_projector.", 0) == 0) {
      CHECK_FALSE(item.value().requires_grad());
      CHECK_FALSE(item.value().grad().defined());
    } else {
      CHECK(item.value().requires_grad());
      REQUIRE(item.value().grad().defined());
    }
  }
  CHECK(in.online[0].grad().abs().sum().item<double>() > 0);
  CHECK(in.online[1].grad().abs().sum().item<double>() > 0);
}

TEST_CASE("moco: the momentum projector starts as the projector and follows it by EMA") {
  auto loss = make_moco();
  auto params = loss->named_parameters();
  for (const auto& item : params)
    if (item.key().rfind("projector.", 0) == 0)
      CHECK(at::equal(item.value(), params["momentum_" + item.key()]));
  std::map<std::string, at::Tensor> before;
  {
    at::NoGradGuard no_grad;
    for (auto& item : params)
      if (item.key().rfind("projector.", 0) == 0) item.value().add_(1.0);
    for (const auto& item : params) before[item.key()] = item.value().clone();
  }
  loss->momentum_update(0.9);
  int checked = 0;
  for (const auto& item : params) {
    if (item.key().rfind("momentum_projector.", 0) != 0) {
      CHECK(at::equal(item.value(), before[item.key()]));  // the online heads do not move
      continue;
    }
    const std::string online = item.key().substr(std::string("momentum_").size());
    const at::Tensor expected = 0.9 * before[item.key()] + 0.1 * before[online];
    CHECK(at::allclose(item.value(), expected, 1e-6, 1e-6));
    ++checked;
  }
  CHECK(checked == 3 + 2 + 2);  // three Linear weights, two affine BNs (weight, bias)
}

TEST_CASE("moco: requirements and the fine-tuning head (first Linear-BN-ReLU of the projector)") {
  auto loss = make_moco();
  wb::LossRequirements need = loss->requirements();
  CHECK(need.views == 2);
  CHECK(need.momentum_encoder);
  CHECK(need.freeze_patch_embedding);
  CHECK_FALSE(make_moco(1.0, false)->requirements().freeze_patch_embedding);

  CHECK(loss->finetune_dim() == kHidden);
  CHECK(loss->finetune_parameters().size() == 3);
  const MocoInputs in;
  const at::Tensor y = loss->finetune_forward(in.online[0]);
  REQUIRE(y.sizes() == at::IntArrayRef({kB, kHidden}));
  const Vec g = param(*loss, "projector.bn0.weight")[0], b = param(*loss, "projector.bn0.bias")[0];
  const Mat ref =
      relu(batch_norm(linear(rows(in.online[0]), param(*loss, "projector.fc0.weight")), &g, &b));
  const Mat got = rows(y);
  for (std::int64_t i = 0; i < kB; ++i)
    for (std::int64_t c = 0; c < kHidden; ++c)
      CHECK(got[i][c] == doctest::Approx(ref[i][c]).epsilon(1e-5));
}

namespace {

// Routings with only aux losses: [view][layer] -> (importance, load); load < 0 means absent.
wb::StepState aux_state(const std::vector<std::vector<std::pair<at::Tensor, at::Tensor>>>& online,
                        double momentum_aux) {
  wb::StepState s;
  for (const auto& view : online) {
    wb::BackboneOutput on, mo;
    on.cls = at::zeros({2, 3});
    mo.cls = at::zeros({2, 3});
    for (const auto& [imp, load] : view) {
      wb::Routing r;
      r.aux["importance"] = imp;
      if (load.defined()) r.aux["load"] = load;
      on.routings.push_back(r);
      wb::Routing m;
      m.aux["importance"] = at::scalar_tensor(momentum_aux);
      m.aux["load"] = at::scalar_tensor(momentum_aux);
      mo.routings.push_back(m);
    }
    s.online.push_back(on);
    s.momentum.push_back(mo);
  }
  return s;
}

std::shared_ptr<wb::Loss> make_balance(double w, double iw, double lw) {
  wb::Params p = plugins().defaults(wb::Kind::Loss, "load_balance");
  p.set("weight", w);
  p.set("importance_weight", iw);
  p.set("load_weight", lw);
  return plugins().make_loss("load_balance", p, loss_context(plugins(), 2));
}

}  // namespace

TEST_CASE("load_balance: sum over layers of the mean over views, online encoder only") {
  // Two views, three layers; layer 2 of view 1 has no load term (e.g. a gate without noise).
  const double imp[2][3] = {{0.5, 1.0, 2.0}, {1.5, 3.0, 4.0}};
  const double load[2][3] = {{0.25, 0.75, 1.25}, {0.5, 0.5, -1}};
  std::vector<std::vector<std::pair<at::Tensor, at::Tensor>>> aux(2);
  for (int v = 0; v < 2; ++v)
    for (int l = 0; l < 3; ++l)
      aux[v].push_back({at::scalar_tensor(imp[v][l]).requires_grad_(true),
                        load[v][l] < 0 ? at::Tensor() : at::scalar_tensor(load[v][l])});
  const double importance = (0.5 + 1.5) / 2 + (1.0 + 3.0) / 2 + (2.0 + 4.0) / 2;  // 6
  const double load_sum = (0.25 + 0.5) / 2 + (0.75 + 0.5) / 2 + 1.25 / 2;         // 1.625
  for (auto [w, iw, lw] :
       {std::tuple{0.01, 1.0, 1.0}, std::tuple{0.005, 1.0, 1.0}, std::tuple{1.0, 2.0, 0.5}}) {
    CAPTURE(w);
    auto loss = make_balance(w, iw, lw);
    CHECK(loss->requirements().views == 1);
    CHECK_FALSE(loss->requirements().momentum_encoder);
    // The momentum routings carry huge aux values: they must not count.
    const wb::LossResult r = loss->compute(aux_state(aux, 1e6));
    CHECK(r.value.item<double>() == doctest::Approx(w * (iw * importance + lw * load_sum)));
    CHECK(r.metrics.at("importance") == doctest::Approx(importance));
    CHECK(r.metrics.at("load") == doctest::Approx(load_sum));
    CHECK(r.metrics.at("importance_moe2") == doctest::Approx(3.0));
    CHECK(r.metrics.at("load_moe2") == doctest::Approx(1.25 / 2));
    for (auto& v : aux)
      for (auto& [t, unused] : v) t.mutable_grad() = at::Tensor();
    r.value.backward();
    CHECK(aux[1][2].first.grad().item<double>() == doctest::Approx(w * iw / 2));
  }
}

TEST_CASE("load_balance: a dense backbone gives an exact, addable 0") {
  wb::StepState s;
  wb::BackboneOutput out;
  out.cls = at::zeros({2, 3});
  s.online = {out, out};
  const wb::LossResult r = make_balance(0.01, 1, 1)->compute(s);
  REQUIRE(r.value.defined());
  CHECK(r.value.item<double>() == 0.0);
  CHECK(r.metrics.at("importance") == 0.0);
}
