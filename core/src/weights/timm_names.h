// The one table from the workbench's ViT weight names to the names of timm's VisionTransformer
// (docs/export.md, "Names"). Dense blocks map one to one; MoE blocks get a timm-like naming of
// our own: the experts as a stacked nn.Linear (blocks.<i>.mlp.experts.fc1.weight [E, H, D], the
// [out, in] orientation of nn.Linear, so the workbench's [E, D, H] is transposed) and the gate's
// parameters under blocks.<i>.mlp.gate.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "weights/state_dict.h"

namespace wb {

// One row: "{i}" stands for a block index, "{rest}" for the rest of a name (a gate plugin's
// own parameter names). `transpose`: the last two dimensions are swapped between the two.
struct NameRule {
  const char* workbench;
  const char* timm;
  bool transpose;
};

const std::vector<NameRule>& timm_name_rules();

struct MappedName {
  std::string name;
  bool transpose = false;
};

// The other side's name by the first rule that matches, or nothing.
std::optional<MappedName> timm_name(const std::string& workbench_name);
std::optional<MappedName> workbench_name(const std::string& timm_name);

// True when every name of the state dict has a timm name: the backbone has the ViT layout
// (the `vit` plugin's, whatever plugin built it) and is exported with timm names.
bool has_timm_layout(const StateDict& workbench_state);

// Renames (and transposes) a workbench state dict into timm's layout; throws for a name
// without a rule.
StateDict to_timm(const StateDict& workbench_state);

}  // namespace wb
