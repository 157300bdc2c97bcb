// Shapes that several losses' terms share (docs/plugins.md, "Sharing code between plugins").
#pragma once

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

#include "workbench/loss.h"

namespace wb {

// Σ over the MoE layers of the mean over views of term(routing), over the online encoder's
// routings (StepState::online: one BackboneOutput per view, each with its layers' Routing): the
// form of a per-layer regulariser on the gates or experts (distill, imbalance). An exact zero for
// a dense backbone. `loss` names the loss in the error when there is no online output.
template <class Term>
at::Tensor sum_over_layers_mean_over_views(const StepState& state, const std::string& loss,
                                           Term&& term) {
  if (state.online.empty()) throw std::logic_error("loss " + loss + ": no online output");
  const auto views = static_cast<double>(state.online.size());
  at::Tensor total = at::zeros({}, state.online.front().cls.options());
  for (const BackboneOutput& out : state.online)
    for (const Routing& r : out.routings) total = total + term(r) / views;
  return total;
}

}  // namespace wb
