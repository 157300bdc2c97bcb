// CR-MoE Fig. 3 in a report: for each routing_consistency evaluator, per group and MoE layer,
// the experts shared by corresponding tokens (same image, same position, two colour-only views)
// and by non-corresponding ones (different images), for CLS and patch tokens, with the gap
// between the two, mean ± std over seeds. The gap of each seed is taken before averaging.
#pragma once

#include <string>
#include <vector>

#include "report/plots.h"
#include "report/stats.h"

namespace wb {

struct LayerConsistency {
  MeanStd corresponding[2], noncorresponding[2], gap[2];  // [0] CLS, [1] patch tokens
};

struct GroupConsistency {
  std::string label;
  std::vector<LayerConsistency> layers;  // per MoE layer
};

struct Consistency {
  std::string evaluator;  // "routing_consistency", "routing_consistency_2", ...
  std::vector<GroupConsistency> groups;
};

// Every routing_consistency* evaluator found in the groups' done points; groups without its
// arrays are left out.
std::vector<Consistency> collect_consistency(const std::vector<LabelledGroup>& groups);

std::string consistency_markdown(const Consistency& c);
std::string consistency_html(const Consistency& c);

}  // namespace wb
