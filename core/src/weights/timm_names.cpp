#include "weights/timm_names.h"

#include <regex>
#include <stdexcept>

namespace wb {

const std::vector<NameRule>& timm_name_rules() {
  static const std::vector<NameRule> rules = {
      {"patch_embed.weight", "patch_embed.proj.weight", false},
      {"patch_embed.bias", "patch_embed.proj.bias", false},
      {"cls_token", "cls_token", false},
      {"pos_embed", "pos_embed", false},  // a buffer here (fixed sin-cos), a parameter in timm
      {"block{i}.norm1.weight", "blocks.{i}.norm1.weight", false},
      {"block{i}.norm1.bias", "blocks.{i}.norm1.bias", false},
      {"block{i}.attn.qkv.weight", "blocks.{i}.attn.qkv.weight", false},
      {"block{i}.attn.qkv.bias", "blocks.{i}.attn.qkv.bias", false},
      {"block{i}.attn.proj.weight", "blocks.{i}.attn.proj.weight", false},
      {"block{i}.attn.proj.bias", "blocks.{i}.attn.proj.bias", false},
      {"block{i}.norm2.weight", "blocks.{i}.norm2.weight", false},
      {"block{i}.norm2.bias", "blocks.{i}.norm2.bias", false},
      {"block{i}.fc1.weight", "blocks.{i}.mlp.fc1.weight", false},
      {"block{i}.fc1.bias", "blocks.{i}.mlp.fc1.bias", false},
      {"block{i}.fc2.weight", "blocks.{i}.mlp.fc2.weight", false},
      {"block{i}.fc2.bias", "blocks.{i}.mlp.fc2.bias", false},
      {"block{i}.moe.w1", "blocks.{i}.mlp.experts.fc1.weight", true},  // [E, D, H] <-> [E, H, D]
      {"block{i}.moe.b1", "blocks.{i}.mlp.experts.fc1.bias", false},   // [E, H]
      {"block{i}.moe.w2", "blocks.{i}.mlp.experts.fc2.weight", true},  // [E, H, D] <-> [E, D, H]
      {"block{i}.moe.b2", "blocks.{i}.mlp.experts.fc2.bias", false},   // [E, D]
      {"block{i}.moe.gate.{rest}", "blocks.{i}.mlp.gate.{rest}", false},
      {"norm.weight", "norm.weight", false},
      {"norm.bias", "norm.bias", false},
  };
  return rules;
}

namespace {

// A rule's pattern as a regular expression whose groups are the placeholders, in order.
struct Compiled {
  std::regex workbench, timm;
};

std::regex compile(const std::string& pattern) {
  std::string re;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern.compare(i, 3, "{i}") == 0) {
      re += "(0|[1-9][0-9]*)";
      i += 2;
    } else if (pattern.compare(i, 6, "{rest}") == 0) {
      re += "(.+)";
      i += 5;
    } else if (pattern[i] == '.') {
      re += "\\.";
    } else {
      re += pattern[i];
    }
  }
  return std::regex(re);
}

const std::vector<Compiled>& compiled() {
  static const std::vector<Compiled> all = [] {
    std::vector<Compiled> out;
    for (const auto& r : timm_name_rules()) out.push_back({compile(r.workbench), compile(r.timm)});
    return out;
  }();
  return all;
}

std::string fill(const std::string& pattern, const std::smatch& m) {
  std::string out;
  std::size_t group = 1;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern.compare(i, 3, "{i}") == 0) {
      out += m[group++].str();
      i += 2;
    } else if (pattern.compare(i, 6, "{rest}") == 0) {
      out += m[group++].str();
      i += 5;
    } else {
      out += pattern[i];
    }
  }
  return out;
}

std::optional<MappedName> map_name(const std::string& name, bool from_workbench) {
  const auto& rules = timm_name_rules();
  for (std::size_t r = 0; r < rules.size(); ++r) {
    std::smatch m;
    const std::regex& source = from_workbench ? compiled()[r].workbench : compiled()[r].timm;
    if (std::regex_match(name, m, source))
      return MappedName{fill(from_workbench ? rules[r].timm : rules[r].workbench, m),
                        rules[r].transpose};
  }
  return std::nullopt;
}

}  // namespace

std::optional<MappedName> timm_name(const std::string& workbench_name) {
  return map_name(workbench_name, true);
}

std::optional<MappedName> workbench_name(const std::string& timm_name) {
  return map_name(timm_name, false);
}

bool has_timm_layout(const StateDict& state) {
  if (state.empty()) return false;
  for (const auto& [name, tensor] : state)
    if (!timm_name(name)) return false;
  return true;
}

StateDict to_timm(const StateDict& state) {
  StateDict out;
  for (const auto& [name, tensor] : state) {
    const auto mapped = timm_name(name);
    if (!mapped) throw std::logic_error("no timm name for the weight '" + name + "'");
    out.emplace_back(mapped->name,
                     mapped->transpose ? tensor.transpose(-2, -1).contiguous() : tensor);
  }
  return out;
}

}  // namespace wb
