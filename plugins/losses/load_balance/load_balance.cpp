// Loss "load_balance": the MoE gates' auxiliary balancing losses (docs/methods.md §2).
//
//   value = weight * sum over MoE layers of mean over views of
//           (importance_weight * L_imp + load_weight * L_load)
//
// from Routing::aux of the ONLINE encoder only: the momentum encoder's routings carry no gradient,
// and adding their aux losses to the logged loss was a fault of the reference code. A gate that
// reports no "load" term (no noise, eval mode) contributes its importance term alone.
// CR-MoE: weight 0.01 (w_lb) with both terms at 1. V-MoE paper: 0.005 on each term, i.e.
// weight = 0.005 with importance_weight = load_weight = 1.
#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

#include "workbench/loss.h"
#include "workbench/plugin.h"

namespace {

class LoadBalance final : public wb::Loss {
 public:
  explicit LoadBalance(const wb::Params& p)
      : weight_(p.real("weight")),
        importance_weight_(p.real("importance_weight")),
        load_weight_(p.real("load_weight")),
        per_layer_(p.boolean("log_layers")) {}

  wb::LossRequirements requirements() const override { return {}; }  // one view is enough

  wb::LossResult compute(const wb::StepState& state) override {
    if (state.online.empty()) throw std::logic_error("loss load_balance: no online output");
    const auto views = static_cast<double>(state.online.size());
    const std::size_t layers = state.online.front().routings.size();
    at::Tensor importance, load;  // sums over layers of the view means
    wb::LossResult r;
    for (std::size_t l = 0; l < layers; ++l) {
      at::Tensor layer_imp, layer_load;
      for (const auto& out : state.online) {
        if (out.routings.size() != layers)
          throw std::logic_error("loss load_balance: views have different numbers of MoE layers");
        const auto& aux = out.routings[l].aux;
        if (auto it = aux.find("importance"); it != aux.end() && it->second.defined())
          layer_imp = layer_imp.defined() ? layer_imp + it->second : it->second;
        if (auto it = aux.find("load"); it != aux.end() && it->second.defined())
          layer_load = layer_load.defined() ? layer_load + it->second : it->second;
      }
      if (layer_imp.defined()) {
        layer_imp = layer_imp / views;
        importance = importance.defined() ? importance + layer_imp : layer_imp;
        if (per_layer_) r.metrics["importance_moe" + std::to_string(l)] = layer_imp;
      }
      if (layer_load.defined()) {
        layer_load = layer_load / views;
        load = load.defined() ? load + layer_load : layer_load;
        if (per_layer_) r.metrics["load_moe" + std::to_string(l)] = layer_load;
      }
    }
    // A dense backbone (or gates without aux losses) gives an exact 0 the trainer can add.
    at::Tensor total = at::zeros({}, state.online.front().cls.options());
    if (importance.defined()) total = total + importance_weight_ * importance;
    if (load.defined()) total = total + load_weight_ * load;
    r.value = weight_ * total;
    r.metrics["importance"] = importance.defined() ? wb::Metric(importance) : wb::Metric(0.0);
    r.metrics["load"] = load.defined() ? wb::Metric(load) : wb::Metric(0.0);
    return r;
  }

 private:
  double weight_, importance_weight_, load_weight_;
  bool per_layer_;
};

}  // namespace

WORKBENCH_PLUGIN("loss load_balance: MoE importance and load losses") {
  using wb::ParamSpec;
  registry.add_loss(
      "load_balance",
      "sum over MoE layers of the gates' importance + load losses (online encoder, mean over "
      "views); CR-MoE w_lb = 0.01, V-MoE paper weight 0.005",
      {
          ParamSpec::real("weight", 0.01, "multiplies the sum (CR-MoE w_lb)").at_least(0),
          ParamSpec::real("importance_weight", 1.0, "weight of the importance loss L_imp")
              .at_least(0),
          ParamSpec::real("load_weight", 1.0, "weight of the load loss L_load").at_least(0),
          ParamSpec::boolean("log_layers", true, "also log each MoE layer's terms"),
      },
      [](const wb::Params& p, const wb::LossContext&) { return std::make_shared<LoadBalance>(p); });
}
