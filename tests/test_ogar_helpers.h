// Helpers for the OGAR / MoCo / matcher tests: hand-built step states, a fake two-rank
// communicator, and plain-loop reference computations (doubles, no ATen) of patch boxes, IoU
// matching, InfoNCE and the whole OGAR loss, written independently of the plugins.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "built_plugins.h"
#include "workbench/comm.h"
#include "workbench/loss.h"
#include "workbench/matcher.h"
#include "workbench/registry.h"

namespace crmoe_test {

using Vec = std::vector<double>;
using Mat = std::vector<Vec>;

using wb_test::plugins;  // the in-tree plugins of this build, loaded once

inline std::shared_ptr<const wb::PluginRef> plugin_ref(const std::string& name,
                                                       const wb::Params& params) {
  auto ref = std::make_shared<wb::PluginRef>();
  ref->kind = wb::Kind::Matcher;
  ref->name = name;
  ref->params = params;
  return ref;
}

// tau: train.temperature's default, the value of MoCo v3 and CR-MoE.
inline wb::LossContext loss_context(wb::Registry& registry, std::int64_t grid,
                                    std::int64_t feature_dim = 4, double tau = 0.2) {
  wb::LossContext c;
  c.feature_dim = feature_dim;
  c.patch_grid = grid;
  c.temperature = tau;
  c.make_matcher = [&registry](const wb::PluginRef& ref) {
    return registry.make_matcher(ref.name, ref.params);
  };
  return c;
}

// Single process: the identity.
class OneRank final : public wb::Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  at::Tensor all_gather(const at::Tensor& local) override { return local; }
  void all_reduce_mean(std::vector<at::Tensor>&) override {}
  void barrier() override {}
};

// Rank 1 of 2: rank 0 is simulated as holding this rank's tensor with its images in reverse
// order (detached: no gradient flows through another rank's part).
class SecondOfTwo final : public wb::Communicator {
 public:
  int rank() const override { return 1; }
  int world_size() const override { return 2; }
  at::Tensor all_gather(const at::Tensor& local) override {
    return at::cat({local.detach().flip({0}), local}, 0);
  }
  void all_reduce_mean(std::vector<at::Tensor>&) override {}
  void barrier() override {}
};

inline Mat rows(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kDouble).contiguous();
  Mat out(static_cast<std::size_t>(c.size(0)), Vec(static_cast<std::size_t>(c.size(1))));
  for (std::int64_t i = 0; i < c.size(0); ++i)
    for (std::int64_t j = 0; j < c.size(1); ++j) out[i][j] = c[i][j].item<double>();
  return out;
}

inline double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

inline Vec unit(Vec v) {
  const double n = std::max(std::sqrt(dot(v, v)), 1e-12);
  for (auto& x : v) x /= n;
  return v;
}

// -log softmax_j(<q, keys_j> / tau)[positive] for one query (vectors already normalised).
inline double nce_term(const Vec& q, const Mat& keys, std::size_t positive, double tau) {
  double denom = 0;
  for (const auto& k : keys) denom += std::exp(dot(q, k) / tau);
  return -(dot(q, keys[positive]) / tau - std::log(denom));
}

struct Box {
  double x, y, w, h;
};

// Patch p = r * g + c of a view whose crop is `view`; a flipped view shows crop column g-1-c.
inline Box patch_box(const Box& view, bool flip, int g, int p) {
  const int r = p / g, c = p % g, src = flip ? g - 1 - c : c;
  return {view.x + view.w * src / g, view.y + view.h * r / g, view.w / g, view.h / g};
}

inline double iou(const Box& a, const Box& b) {
  const double iw = std::max(0.0, std::min(a.x + a.w, b.x + b.w) - std::max(a.x, b.x));
  const double ih = std::max(0.0, std::min(a.y + a.h, b.y + b.h) - std::max(a.y, b.y));
  const double inter = iw * ih, uni = a.w * a.h + b.w * b.h - inter;
  return uni > 0 ? inter / uni : 0;
}

struct View {
  std::vector<Box> boxes;
  std::vector<bool> flips;
};

inline wb::ViewGeometry geometry(const View& v) {
  const auto B = static_cast<std::int64_t>(v.boxes.size());
  at::Tensor box = at::empty({B, 4}, at::kFloat), flip = at::empty({B}, at::kBool);
  for (std::int64_t i = 0; i < B; ++i) {
    const Box& b = v.boxes[i];
    box[i][0] = b.x;
    box[i][1] = b.y;
    box[i][2] = b.w;
    box[i][3] = b.h;
    flip[i] = static_cast<bool>(v.flips[i]);
  }
  return {box, flip};
}

// A match per image: key patch and validity of every query patch.
struct RefMatch {
  std::vector<std::vector<int>> index;
  std::vector<std::vector<bool>> valid;
};

// Overlap matching by plain loops: largest IoU (first one on ties), valid iff IoU > lambda.
inline RefMatch overlap_match(const View& q, const View& k, int g, double lambda) {
  RefMatch m;
  for (std::size_t i = 0; i < q.boxes.size(); ++i) {
    std::vector<int> idx;
    std::vector<bool> ok;
    for (int p = 0; p < g * g; ++p) {
      const Box a = patch_box(q.boxes[i], q.flips[i], g, p);
      int best = 0;
      double best_iou = -1;
      for (int n = 0; n < g * g; ++n) {
        const double v = iou(a, patch_box(k.boxes[i], k.flips[i], g, n));
        if (v > best_iou) best_iou = v, best = n;
      }
      idx.push_back(best);
      ok.push_back(best_iou > lambda);
    }
    m.index.push_back(idx);
    m.valid.push_back(ok);
  }
  return m;
}

// Hand-made routings of a two-view step: gate vectors per view, layer and encoder. The online
// dense vectors are leaves with gradients; the sparse ones keep the top-k of them.
struct HandStep {
  std::int64_t B = 3, g = 2, E = 4, layers = 2, k = 2;
  std::vector<std::vector<at::Tensor>> online_probs, momentum_probs;  // [view][layer] [T, E]
  std::vector<std::vector<at::Tensor>> online_tokens, momentum_tokens;
  View views[2];
  wb::Batch batch;

  std::int64_t tokens_per_image() const { return 1 + g * g; }

  static at::Tensor sparse(const at::Tensor& probs, std::int64_t k) {
    auto [p, e] = probs.topk(k, 1);
    return at::zeros_like(probs).scatter(1, e, p);
  }

  void make(std::uint64_t seed) {
    at::manual_seed(seed);
    const std::int64_t T = B * tokens_per_image();
    online_probs.assign(2, {});
    momentum_probs.assign(2, {});
    online_tokens.assign(2, {});
    momentum_tokens.assign(2, {});
    for (int v = 0; v < 2; ++v)
      for (std::int64_t l = 0; l < layers; ++l) {
        online_probs[v].push_back(at::softmax(at::randn({T, E}), 1).requires_grad_(true));
        momentum_probs[v].push_back(at::softmax(at::randn({T, E}), 1));
        online_tokens[v].push_back(at::randn({T, 3}));
        momentum_tokens[v].push_back(at::randn({T, 3}));
      }
    batch.geometry = {geometry(views[0]), geometry(views[1])};
  }

  wb::Routing routing(const at::Tensor& probs, const at::Tensor& tokens) const {
    wb::Routing r;
    r.probs = probs;
    r.gates = sparse(probs, k);
    r.logits = probs.log();  // logits up to a per-token constant: softmax(logits) = probs
    r.tokens = tokens;
    r.tokens_per_image = tokens_per_image();
    auto [p, e] = probs.topk(k, 1);
    r.experts = e;
    r.weights = p;
    r.kept = at::ones_like(e, e.options().dtype(at::kBool));
    return r;
  }

  wb::StepState state(wb::Communicator* comm) const {
    wb::StepState s;
    s.batch = &batch;
    s.comm = comm;
    for (int v = 0; v < 2; ++v) {
      wb::BackboneOutput on, mo;
      on.cls = at::zeros({B, 3});
      mo.cls = at::zeros({B, 3});
      for (std::int64_t l = 0; l < layers; ++l) {
        on.routings.push_back(routing(online_probs[v][l], online_tokens[v][l]));
        mo.routings.push_back(routing(momentum_probs[v][l], momentum_tokens[v][l]));
      }
      s.online.push_back(on);
      s.momentum.push_back(mo);
    }
    return s;
  }

  // Gate vectors of one encoder / view / layer, normalised, as [image][token] vectors: the
  // sparse top-k probabilities, the dense softmax, or the logits (log of the probabilities).
  std::vector<Mat> vectors(bool online, int view, std::int64_t layer, bool dense,
                           bool logits = false) const {
    const at::Tensor& p = online ? online_probs[view][layer] : momentum_probs[view][layer];
    const Mat all = rows(logits ? p.log() : dense ? p : sparse(p, k));
    std::vector<Mat> out(static_cast<std::size_t>(B));
    const auto tpi = tokens_per_image();
    for (std::int64_t i = 0; i < B; ++i)
      for (std::int64_t t = 0; t < tpi; ++t) out[i].push_back(unit(all[i * tpi + t]));
    return out;
  }
};

struct OgarSettings {
  double weight = 0.001, alpha = 0.3, tau = 0.2;
  bool dense = false, negatives = true;
  bool logits = false;         // gate_vector = "logits" (wins over dense)
  bool mean_all = true;        // patch_mean = "all" (eq. 8); false: "valid"
  bool second_of_two = false;  // simulate rank 1 of 2 (SecondOfTwo)
};

struct OgarRef {
  double value = 0, cls = 0, patch = 0, valid_fraction = 0;
};

// The whole OGAR loss by plain loops, given each direction's match (direction 0: queries from
// view 0, keys from view 1; direction 1: the reverse) for every layer.
inline OgarRef ogar_reference(
    const HandStep& h, const OgarSettings& s,
    const std::function<RefMatch(int direction, std::int64_t layer)>& match) {
  OgarRef out;
  double valid = 0, pairs = 0;
  const auto B = static_cast<std::size_t>(h.B), N = static_cast<std::size_t>(h.g * h.g);
  // Global index of local image i, and the local image behind global key j (SecondOfTwo).
  const std::size_t offset = s.second_of_two ? B : 0, Bg = s.second_of_two ? 2 * B : B;
  auto local_of = [&](std::size_t j) { return j < offset ? B - 1 - j : j - offset; };
  for (std::int64_t l = 0; l < h.layers; ++l) {
    double cls = 0, patch = 0;
    for (int a = 0; a < 2; ++a) {
      const int b = 1 - a;
      const auto Q = h.vectors(true, a, l, s.dense, s.logits),
                 K = h.vectors(false, b, l, s.dense, s.logits);
      const RefMatch m = match(a, l);
      double c = 0;
      Mat cls_keys;
      for (std::size_t j = 0; j < Bg; ++j) cls_keys.push_back(K[local_of(j)][0]);
      for (std::size_t i = 0; i < B; ++i)
        c += s.negatives ? nce_term(Q[i][0], cls_keys, offset + i, s.tau) * 2 * s.tau
                         : -dot(Q[i][0], K[i][0]);
      cls += c / B;
      double p = 0, count = 0;
      for (std::size_t i = 0; i < B; ++i)
        for (std::size_t q = 0; q < N; ++q) {
          pairs += 1;
          if (!m.valid[i][q]) continue;
          count += 1;
          if (!s.negatives) {
            p += -dot(Q[i][1 + q], K[i][1 + m.index[i][q]]);
            continue;
          }
          Mat keys;  // k_{j, match_j(q)} for every image j of the global batch
          for (std::size_t j = 0; j < Bg; ++j) {
            const std::size_t lj = local_of(j);
            keys.push_back(K[lj][1 + m.index[lj][q]]);
          }
          p += nce_term(Q[i][1 + q], keys, offset + i, s.tau) * 2 * s.tau;
        }
      valid += count;
      const double divisor = s.mean_all ? static_cast<double>(B * N) : count;
      patch += divisor > 0 ? p / divisor : 0.0;
    }
    out.cls += cls;
    out.patch += patch;
    out.value += (1 - s.alpha) * cls + s.alpha * patch;
  }
  out.value *= s.weight;
  out.valid_fraction = pairs > 0 ? valid / pairs : 0;
  return out;
}

inline std::shared_ptr<wb::Loss> make_ogar(wb::Registry& registry, const OgarSettings& s,
                                           const std::string& matcher, const wb::Params& mp,
                                           std::int64_t grid) {
  wb::Params p = registry.defaults(wb::Kind::Loss, "ogar");
  p.set("weight", s.weight);
  p.set("alpha", s.alpha);
  p.set("gate_vector", std::string(s.logits ? "logits" : s.dense ? "dense" : "sparse"));
  p.set("negatives", s.negatives);
  p.set("patch_mean", std::string(s.mean_all ? "all" : "valid"));
  p.set("matcher", std::shared_ptr<const wb::PluginRef>(plugin_ref(matcher, mp)));
  return registry.make_loss("ogar", p, loss_context(registry, grid, 4, s.tau));
}

}  // namespace crmoe_test
