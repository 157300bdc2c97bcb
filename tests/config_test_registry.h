// A registry with fake plugin entries for the configuration tests: the schemas are real, the
// factories are never called, so no plugin library (and no LibTorch) is needed.
#pragma once

#include <memory>

#include "workbench/registry.h"

namespace wb::test {

inline void add_fake_plugins(Registry& r) {
  using P = ParamSpec;
  r.add_backbone(
      "vit", "fake ViT",
      {P::integer("dim", 192, "width").at_least(1), P::integer("depth", 6, "blocks").range(1, 48),
       P::integer("experts", 0, "experts per MoE layer; 0 = dense").at_least(0)},
      [](const Params&, const BackboneContext&) { return std::shared_ptr<Backbone>(); });
  r.add_backbone("mlp", "fake MLP", {P::integer("hidden", 64, "hidden width").at_least(1)},
                 [](const Params&, const BackboneContext&) { return std::shared_ptr<Backbone>(); });
  r.add_gate("noisy_topk", "fake top-k gate",
             {P::integer("k", 2, "experts per token").at_least(1),
              P::real("noise_std", 1.0, "noise").above(0)},
             [](const Params&, const GateShape&) { return std::shared_ptr<Gate>(); });
  r.add_gate("fixed", "fake fixed gate", {},
             [](const Params&, const GateShape&) { return std::shared_ptr<Gate>(); });
  r.add_loss(
      "moco", "fake MoCo",
      {P::real("tau", 0.2, "temperature").above(0), P::real("weight", 1.0, "weight").at_least(0)},
      [](const Params&, const LossContext&) { return std::shared_ptr<Loss>(); });
  r.add_loss("ogar", "fake OGAR",
             {P::real("alpha", 0.3, "patch term weight").range(0, 1),
              P::real("weight", 1.0, "weight").at_least(0),
              P::plugin("matcher", Kind::Matcher, "overlap", "patch matching"),
              P::text("mode", "sparse", "dispatch").one_of({"sparse", "dense"})},
             [](const Params&, const LossContext&) { return std::shared_ptr<Loss>(); });
  r.add_matcher("overlap", "fake IoU matcher",
                {P::real("lambda", 0.2, "IoU threshold").range(0, 1)},
                [](const Params&) { return std::shared_ptr<Matcher>(); });
  r.add_matcher("fsm", "fake feature matcher", {P::real("threshold", 0.5, "similarity threshold")},
                [](const Params&) { return std::shared_ptr<Matcher>(); });
  r.add_evaluator("knn", "fake kNN", {P::integer("k", 20, "neighbours").at_least(1)},
                  [](const Params&) { return std::shared_ptr<Evaluator>(); });
  r.add_evaluator("linear", "fake linear probe", {P::integer("epochs", 10, "epochs").at_least(1)},
                  [](const Params&) { return std::shared_ptr<Evaluator>(); });
}

}  // namespace wb::test
