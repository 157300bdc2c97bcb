#include "config/point_checks.h"

#include <stdexcept>

#include "config/validate.h"
#include "workbench/registry.h"

namespace wb::config {

namespace {

// One plugin table of the point: where it is in the tree and how messages name it.
struct Table {
  Kind kind;
  const PluginConfig* plugin;
  std::string path;  // "gate", "losses.mae", "evaluators.1"
  const Node* node;  // the table (or plain name) in the tree
};

// Reports the first error of a plugin's check at the position of its key's value; a key left at
// its default has none, so its table's position is used and the default is named.
[[noreturn]] void report(const Node& tree, const Table& t, const ValidationError& e) {
  const std::string what = std::string(kind_name(t.kind)) + " '" + t.plugin->plugin + "'";
  const std::string path = e.key.empty() ? t.path : t.path + "." + e.key;
  const Node* value = nullptr;
  if (!e.key.empty()) {
    try {
      value = lookup(tree, path, Pos{});
    } catch (const ConfigError&) {
      value = nullptr;
    }
  }
  if (value)
    fail(value->pos, path + " = " + literal(*value) + ": " + e.message + " (" + what + ")");
  std::string shown = path;
  if (!e.key.empty() && t.plugin->params.has(e.key))
    shown += " = " + format_value(t.plugin->params.at(e.key)) + " (its default)";
  fail(t.node->pos, shown + ": " + e.message + " (" + what + ")");
}

ValidationReport run_check(const Node& tree, const Table& t, const Registry& registry,
                           const ValidationContext& context) {
  ValidationReport r;
  try {
    r = registry.check(t.kind, t.plugin->plugin, t.plugin->params, context);
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    report(tree, t, ValidationError{"", std::string("its check failed: ") + e.what()});
  }
  if (!r.ok()) report(tree, t, r.errors.front());
  return r;
}

std::vector<Table> plugin_list(const Node& tree, const std::string& key, Kind kind,
                               const std::vector<PluginConfig>& plugins) {
  std::vector<Table> out;
  const Node* list = tree.find(key);
  if (!list || !list->is_array() || list->items.size() != plugins.size()) return out;
  for (std::size_t i = 0; i < plugins.size(); ++i)
    out.push_back(Table{kind, &plugins[i], element_path(key, *list, i), &list->items[i]});
  return out;
}

// Runs every loss's check and merges what they declare they need, as the trainer merges the
// built losses' requirements: two losses asking different mask ratios are refused here, at the
// second one's mask_ratio.
LossRequirements check_losses(const Node& tree, const RunConfig& config, const Registry& registry,
                              const ValidationContext& context) {
  LossRequirements needs;
  for (const Table& t : plugin_list(tree, "losses", Kind::Loss, config.losses)) {
    const ValidationReport r = run_check(tree, t, registry, context);
    try {
      needs = merge_requirements(needs, r.needs);
    } catch (const std::invalid_argument& e) {
      report(tree, t,
             ValidationError{t.plugin->params.has("mask_ratio") ? "mask_ratio" : "", e.what()});
    }
  }
  return needs;
}

void check_device(const Node& tree, const RunConfig& config, const PointEnvironment& env) {
  if (!env.has_cuda || config.settings.run.device != "cuda" || env.has_cuda()) return;
  const Node* device = tree.find("device");
  fail(device ? device->pos : tree.pos,
       "device = \"cuda\", but LibTorch finds no CUDA device on this host; use \"auto\" (CUDA "
       "where there is one) or \"cpu\"");
}

}  // namespace

void check_point(const Node& tree, const RunConfig& config, const Registry& registry,
                 const PointEnvironment& environment) {
  check_device(tree, config, environment);

  const DataShapeHint data =
      environment.data_shape ? environment.data_shape(config.settings.data) : DataShapeHint{};
  ValidationContext context;
  context.image_size = data.image_size;
  context.channels = data.channels;
  context.classes = data.classes;
  context.backbone = config.backbone.plugin;
  context.gate = config.gate.plugin;
  context.data = &config.data;
  context.train = &config.train;

  // The backbone first: the model it declares is what the losses, gate and evaluators check
  // against (a gate's k against the backbone's experts).
  const Node* backbone = tree.find("backbone");
  if (!backbone) return;  // validate_run has refused it already
  const ValidationReport model = run_check(
      tree, Table{Kind::Backbone, &config.backbone, "backbone", backbone}, registry, context);
  context.feature_dim = model.shape.feature_dim;
  context.experts = model.shape.experts;
  context.patch_grid = model.shape.patch_grid;
  context.moe_layers = model.shape.moe_layers;

  // The losses next: what they declare they need (their views) is what the gate checks (the
  // fixed gate's expert per view), and the gate's routable views what the evaluators check.
  context.views = check_losses(tree, config, registry, context).views;
  if (const Node* gate = tree.find("gate"); gate && !config.gate.plugin.empty())
    context.routed_views =
        run_check(tree, Table{Kind::Gate, &config.gate, "gate", gate}, registry, context)
            .routed_views;
  for (const Table& t : plugin_list(tree, "evaluators", Kind::Evaluator, config.evaluators))
    run_check(tree, t, registry, context);
}

}  // namespace wb::config
