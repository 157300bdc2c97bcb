#include "weights/init.h"

#include <caffe2/serialize/inline_container.h>
#include <fnmatch.h>
#include <spdlog/spdlog.h>
#include <torch/serialize/input-archive.h>

#include <map>
#include <optional>
#include <regex>
#include <stdexcept>

#include "config/schema.h"
#include "weights/safetensors.h"
#include "weights/timm_names.h"
#include "weights/torch_file.h"

namespace wb {

namespace fs = std::filesystem;

namespace {

struct Source {
  StateDict tensors;
  bool workbench_names = false;  // a run's checkpoint: names as the backbone has them
  std::string what;
};

void collect(torch::serialize::InputArchive& archive, const std::string& prefix, StateDict& out) {
  for (const auto& key : archive.keys()) {
    at::Tensor t;
    if (archive.try_read(key, t) || archive.try_read(key, t, /*is_buffer=*/true)) {
      out.emplace_back(prefix + key, t);
      continue;
    }
    torch::serialize::InputArchive sub;
    if (archive.try_read(key, sub)) collect(sub, prefix + key + ".", out);
  }
}

// A workbench checkpoint is a LibTorch archive; torch.save files have no constants.pkl.
bool is_libtorch_archive(const fs::path& file) {
  try {
    caffe2::serialize::PyTorchStreamReader reader(file.string());
    return reader.hasRecord("constants.pkl");
  } catch (const c10::Error&) {
    return false;
  }
}

Source read_checkpoint(const fs::path& file) {
  Source s;
  s.workbench_names = true;
  s.what = "the backbone of checkpoint " + file.string();
  torch::serialize::InputArchive archive;
  torch::serialize::InputArchive backbone;
  try {
    archive.load_from(file.string());
  } catch (const c10::Error& e) {
    throw std::runtime_error(file.string() +
                             ": cannot read the checkpoint: " + e.what_without_backtrace());
  }
  // The module name the trainer saves the online backbone under (train/trainer.cpp).
  if (!archive.try_read("module/backbone", backbone))
    throw std::runtime_error(file.string() +
                             ": a LibTorch archive without a backbone: not a "
                             "workbench checkpoint");
  collect(backbone, "", s.tensors);
  return s;
}

Source read_source(const fs::path& from) {
  std::error_code ec;
  if (fs::is_directory(from, ec)) {
    if (fs::is_regular_file(from / "checkpoints" / "last.pt", ec))
      return read_checkpoint(from / "checkpoints" / "last.pt");
    for (const char* name : {"backbone.safetensors", "backbone.pt"})
      if (fs::is_regular_file(from / name, ec)) return read_source(from / name);
    throw std::runtime_error(from.string() +
                             ": a directory that is neither a run (checkpoints/last.pt) nor a "
                             "workbench export (backbone.safetensors or backbone.pt)");
  }
  if (!fs::is_regular_file(from, ec)) throw std::runtime_error(from.string() + ": no such file");
  if (is_zip_file(from) && is_libtorch_archive(from)) return read_checkpoint(from);
  Source s;
  s.tensors = load_state_dict(from);
  s.what = from.string();
  return s;
}

bool allowed(const std::string& name, const std::vector<std::string>& patterns) {
  for (const auto& p : patterns)
    if (::fnmatch(p.c_str(), name.c_str(), 0) == 0) return true;
  return false;
}

std::string listing(const std::vector<std::string>& names) {
  const std::size_t shown = std::min<std::size_t>(names.size(), 30);
  std::string s;
  for (std::size_t i = 0; i < shown; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > shown) s += ", ... (" + std::to_string(names.size() - shown) + " more)";
  return s;
}

// MoCE (docs/methods.md §8): a dense block's MLP weight that has no place in the target because
// the target's block is a MoE layer: the name of the stacked expert weight it starts, and
// whether the dense matrix is transposed on the way (nn.Linear's [out, in] against the
// experts' [in, out]).
struct ExpertRule {
  std::string target;
  bool transpose = false;
  bool weight = false;
};

std::optional<ExpertRule> expert_rule(const std::string& dense_name) {
  static const std::regex re(R"(block(\d+)\.(fc1|fc2)\.(weight|bias))");
  std::smatch m;
  if (!std::regex_match(dense_name, m, re)) return std::nullopt;
  const bool weight = m[3] == "weight";
  const std::string stem = m[2] == "fc1" ? (weight ? "w1" : "b1") : (weight ? "w2" : "b2");
  return ExpertRule{"block" + m[1].str() + ".moe." + stem, weight, weight};
}

// Every expert a copy of the dense value [...] -> [E, ...]; with noise > 0 each copy gets
// Gaussian noise of std noise x (the dense value's own std), so that the experts differ.
at::Tensor expert_copies(const at::Tensor& dense, std::int64_t experts, double noise) {
  std::vector<std::int64_t> sizes = dense.sizes().vec();
  sizes.insert(sizes.begin(), experts);
  at::Tensor out = dense.unsqueeze(0).expand(sizes).clone();
  if (noise > 0 && dense.numel() > 1)
    out.add_(at::randn_like(out) * (noise * dense.std().item<double>()));
  return out;
}

}  // namespace

InitOutcome load_initial_weights(const fs::path& from, torch::nn::Module& backbone,
                                 const std::vector<std::string>& allow_missing,
                                 const std::vector<std::string>& allow_unexpected,
                                 double expert_noise) {
  const Source source = read_source(from);
  std::map<std::string, at::Tensor> target;  // live tensors of the backbone, workbench names
  StateDict names;
  for (const auto& item : backbone.named_parameters()) target[item.key()] = item.value();
  for (const auto& item : backbone.named_buffers()) target[item.key()] = item.value();
  for (const auto& [name, t] : target) names.emplace_back(name, at::Tensor());
  // A backbone with the ViT layout reads files in timm's names, as `workbench export` writes
  // them; any other backbone reads its own names.
  const bool timm = !source.workbench_names && has_timm_layout(names);

  InitOutcome outcome;
  outcome.source = source.what;
  outcome.timm_names = timm;
  std::vector<std::string> shape_errors, unexpected;
  std::map<std::string, std::string> assigned;            // workbench name -> source name
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;  // (target, value)
  for (const auto& [name, tensor] : source.tensors) {
    std::string wb_name = name;
    bool transpose = false;
    if (timm) {
      const auto mapped = workbench_name(name);
      if (!mapped) {
        unexpected.push_back(name);
        continue;
      }
      wb_name = mapped->name;
      transpose = mapped->transpose;
    }
    auto it = target.find(wb_name);
    bool to_experts = false;
    if (it == target.end()) {
      // A dense MLP into a MoE block (MoCE): it starts every expert of that block.
      const auto rule = expert_rule(wb_name);
      if (rule) it = target.find(rule->target);
      if (it == target.end()) {
        unexpected.push_back(name);
        continue;
      }
      wb_name = rule->target;
      transpose = rule->transpose;
      to_experts = true;
    }
    if (!assigned.emplace(wb_name, name).second)
      throw std::runtime_error(source.what + ": '" + name + "' and '" + assigned[wb_name] +
                               "' both map to the backbone's weight '" + wb_name + "'");
    at::Tensor value = transpose && tensor.dim() >= 2 ? tensor.transpose(-2, -1) : tensor;
    if (to_experts && it->second.dim() == value.dim() + 1)
      value = expert_copies(value, it->second.size(0), expert_noise);
    if (!value.sizes().equals(it->second.sizes())) {
      shape_errors.push_back(name + " is " + describe_tensor(tensor) + " in the source, but " +
                             wb_name + " is " + describe_tensor(it->second) + " in the backbone" +
                             (transpose ? " (the source's is transposed on loading)" : ""));
      continue;
    }
    copies.emplace_back(it->second, value);
  }
  std::vector<std::string> missing;
  for (const auto& [name, t] : target)
    if (!assigned.count(name)) missing.push_back(timm ? timm_name(name)->name : name);

  std::string refused;
  if (!shape_errors.empty())
    refused += "\n  shapes differ: " + std::to_string(shape_errors.size()) +
               " weights: " + listing(shape_errors);
  std::vector<std::string> bad_missing, bad_unexpected;
  for (const auto& n : missing)
    (allowed(n, allow_missing) ? outcome.missing : bad_missing).push_back(n);
  for (const auto& n : unexpected)
    (allowed(n, allow_unexpected) ? outcome.unexpected : bad_unexpected).push_back(n);
  if (!bad_missing.empty())
    refused += "\n  missing from the source: " + std::to_string(bad_missing.size()) +
               " weights of the backbone: " + listing(bad_missing) +
               " (init.allow_missing = [\"pattern\", ...] keeps their initial values)";
  if (!bad_unexpected.empty())
    refused += "\n  unexpected: " + std::to_string(bad_unexpected.size()) +
               " weights of the source have no place in the backbone: " + listing(bad_unexpected) +
               " (init.allow_unexpected = [\"pattern\", ...] ignores them)";
  if (!refused.empty())
    throw std::runtime_error("init.from = \"" + from.string() + "\": cannot start from " +
                             source.what + (timm ? " (read with timm's names)" : "") + ":" +
                             refused);

  at::NoGradGuard no_grad;
  for (auto& [t, value] : copies) t.copy_(value);
  outcome.loaded = copies.size();
  return outcome;
}

namespace {

// init.expert_noise, or its schema default for a table built by hand without it.
double expert_noise(const Params& init) {
  if (init.has("expert_noise")) return init.real("expert_noise");
  Params defaults;
  for (const auto& spec : init_schema())
    if (spec.name == "expert_noise" && spec.default_value)
      defaults.set(spec.name, *spec.default_value);
  return defaults.real("expert_noise");
}

}  // namespace

void apply_init(const Params& init, Model& model, spdlog::logger& log) {
  const std::string from = init.text("from");
  if (from.empty()) return;
  const InitOutcome o = load_initial_weights(from, *model.backbone, init.texts("allow_missing"),
                                             init.texts("allow_unexpected"), expert_noise(init));
  log.info("init: {} weights from {}{}", o.loaded, o.source, o.timm_names ? " (timm's names)" : "");
  if (!o.missing.empty())
    log.warn("init: {} weights keep their initial values (init.allow_missing): {}",
             o.missing.size(), listing(o.missing));
  if (!o.unexpected.empty())
    log.warn("init: {} weights of the source ignored (init.allow_unexpected): {}",
             o.unexpected.size(), listing(o.unexpected));
  // The momentum encoder starts as a copy of the online backbone, as it does without [init].
  if (model.momentum) copy_weights(*model.backbone, *model.momentum);
}

}  // namespace wb
