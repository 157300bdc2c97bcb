#include "weights/export.h"

#include <ATen/ATen.h>

#include <map>
#include <stdexcept>

#include "config/run_config.h"
#include "data/datasets.h"
#include "dist/communicator.h"
#include "store/atomic_file.h"
#include "store/run_dir.h"
#include "train/checkpoint.h"
#include "train/data_access.h"
#include "train/model.h"
#include "weights/json.h"
#include "weights/safetensors.h"
#include "weights/timm_names.h"
#include "weights/torch_file.h"
#include "workbench/registry.h"
#include "workbench/version.h"

namespace wb {

namespace fs = std::filesystem;

namespace {

json::Value to_json(const Value& value);

json::Value params_json(const Params& params) {
  json::Value o = json::Value::object();
  for (const auto& [k, v] : params.values()) o.set(k, to_json(v));
  return o;
}

template <class T>
json::Value json_list(const std::vector<T>& v) {
  json::Value a = json::Value::array();
  for (const auto& x : v) a.items.push_back(json::Value::of(x));
  return a;
}

json::Value to_json(const Value& value) {
  struct Visitor {
    json::Value operator()(bool b) const { return json::Value::of(b); }
    json::Value operator()(std::int64_t i) const { return json::Value::of(i); }
    json::Value operator()(double d) const { return json::Value::of(d); }
    json::Value operator()(const std::string& s) const { return json::Value::of(s); }
    json::Value operator()(const std::vector<std::int64_t>& v) const { return json_list(v); }
    json::Value operator()(const std::vector<double>& v) const { return json_list(v); }
    json::Value operator()(const std::vector<std::string>& v) const { return json_list(v); }
    json::Value operator()(const std::shared_ptr<const PluginRef>& p) const {
      if (!p || p->name.empty()) return json::Value::null();
      json::Value o = json::Value::object();
      o.set("plugin", json::Value::of(p->name));
      o.set("params", params_json(p->params));
      return o;
    }
  };
  return std::visit(Visitor{}, value);
}

json::Value ints(const std::vector<std::int64_t>& v) {
  return json_list(v);
}

const at::Tensor& need(const StateDict& state, const std::string& name) {
  const at::Tensor* t = find_tensor(state, name);
  if (!t) throw std::logic_error("export: the backbone has no weight " + name);
  return *t;
}

// The architecture of a backbone with the ViT layout, read from its weights (widths, depth,
// patch, channels) and from what the weights cannot tell: heads (the configuration) and the
// image size and MoE layout (what the backbone reports).
json::Value vit_architecture(const StateDict& state, const RunConfig& config,
                             const Backbone& backbone, json::Value& timm_kwargs) {
  const at::Tensor& patch = need(state, "patch_embed.weight");  // [D, C, p, p]
  const std::int64_t dim = patch.size(0), channels = patch.size(1), p = patch.size(3);
  std::int64_t depth = 0, mlp_hidden = 0;
  for (const auto& [name, t] : state) {
    if (name.rfind("block", 0) != 0) continue;
    depth = std::max<std::int64_t>(depth, std::stoll(name.substr(5)) + 1);
    if (name.size() > 14 && name.compare(name.size() - 11, 11, ".fc1.weight") == 0)
      mlp_hidden = t.size(0);
  }
  const Params& bp = config.backbone.params;
  const bool has_heads = bp.has("heads") && std::holds_alternative<std::int64_t>(bp.at("heads"));
  json::Value a = json::Value::object();
  a.set("image_size", json::Value::of(backbone.patch_grid() * p));
  a.set("channels", json::Value::of(channels));
  a.set("patch_size", json::Value::of(p));
  a.set("embed_dim", json::Value::of(dim));
  a.set("depth", json::Value::of(depth));
  a.set("num_heads", has_heads ? json::Value::of(bp.integer("heads")) : json::Value::null());
  a.set("mlp_hidden", mlp_hidden ? json::Value::of(mlp_hidden) : json::Value::null());
  a.set("qkv_bias", json::Value::of(true));
  a.set("norm", json::Value::of("LayerNorm, eps 1e-6, pre-norm blocks and a final norm"));
  a.set("act", json::Value::of("GELU (exact, erf)"));
  a.set("pos_embed", json::Value::of("fixed 2-D sin-cos [1, 1 + grid^2, dim], CLS row 0; added "
                                     "after the CLS token is prepended"));
  a.set("feature", json::Value::of("CLS token after the final norm"));
  const auto experts = backbone.experts();
  if (experts > 0) {
    json::Value moe = json::Value::object();
    const auto blocks = backbone.moe_blocks();
    moe.set("blocks", ints(blocks));
    moe.set("experts", json::Value::of(experts));
    if (!blocks.empty())
      moe.set(
          "expert_hidden",
          json::Value::of(need(state, "block" + std::to_string(blocks[0]) + ".moe.w1").size(2)));
    json::Value gate = json::Value::object();
    gate.set("plugin", json::Value::of(config.gate.plugin));
    gate.set("params", params_json(config.gate.params));
    moe.set("gate", std::move(gate));
    a.set("moe", std::move(moe));
  } else {
    a.set("moe", json::Value::null());
  }
  // timm.models.vision_transformer.VisionTransformer(**kwargs) rebuilds a dense backbone.
  if (experts == 0 && has_heads && mlp_hidden > 0) {
    timm_kwargs = json::Value::object();
    timm_kwargs.set("img_size", json::Value::of(backbone.patch_grid() * p));
    timm_kwargs.set("patch_size", json::Value::of(p));
    timm_kwargs.set("in_chans", json::Value::of(channels));
    timm_kwargs.set("embed_dim", json::Value::of(dim));
    timm_kwargs.set("depth", json::Value::of(depth));
    timm_kwargs.set("num_heads", json::Value::of(bp.integer("heads")));
    timm_kwargs.set("mlp_ratio",
                    json::Value::of(static_cast<double>(mlp_hidden) / static_cast<double>(dim)));
    timm_kwargs.set("qkv_bias", json::Value::of(true));
    timm_kwargs.set("class_token", json::Value::of(true));
    timm_kwargs.set("global_pool", json::Value::of("token"));
    timm_kwargs.set("num_classes", json::Value::of(0));
  }
  return a;
}

// "losses.<plugin>." when the plugin is listed once, else "losses.<index>.": the addresses
// experiment files use for the same losses.
std::string loss_prefix(const RunConfig& config, std::size_t i) {
  std::size_t same = 0;
  for (const auto& l : config.losses) same += l.plugin == config.losses[i].plugin;
  return "losses." + (same == 1 ? config.losses[i].plugin : std::to_string(i)) + ".";
}

struct Writer {
  fs::path dir;
  std::map<std::string, std::string> metadata;
  ExportResult* result;
  json::Value files = json::Value::object();

  void write(const std::string& stem, const StateDict& state) {
    const fs::path pt = dir / (stem + ".pt"), st = dir / (stem + ".safetensors");
    save_torch_file(pt, state);
    save_safetensors(st, state, metadata);
    result->files.push_back(pt);
    result->files.push_back(st);
    files.set(stem, json::Value::array({json::Value::of(pt.filename().string()),
                                        json::Value::of(st.filename().string())}));
  }
};

StateDict sample_features(const RunConfig& config, Model& model, std::int64_t n,
                          std::int64_t image_size) {
  auto test = open_data(config.settings.data, Split::Test);
  test = data::first_n(test, std::min(n, test->size()));
  LoaderOptions o;
  o.batch_size = test->size();
  o.shuffle = false;
  o.drop_last = false;
  o.workers = 0;
  Loader loader(test, {make_recipe("eval", Params(), image_size)}, o);
  loader.start_epoch(0);
  const std::optional<Batch> batch = loader.next();
  if (!batch) throw std::runtime_error("export --samples: the test split has no images");
  at::NoGradGuard no_grad;
  model.backbone->eval();
  RoutingContext rc;
  rc.training = false;
  rc.view = at::zeros({batch->size()}, at::TensorOptions().dtype(at::kLong));
  rc.cluster = batch->cluster;
  const BackboneOutput out = model.backbone->forward(batch->views[0], rc);
  StateDict s{{"images", batch->views[0]}, {"cls", out.cls}};
  if (batch->labels.defined()) s.emplace_back("labels", batch->labels);
  return s;
}

}  // namespace

ExportResult export_run(const fs::path& run_dir, const Registry& registry,
                        const ExportOptions& options) {
  const RunPaths paths(run_dir);
  if (!fs::is_regular_file(paths.config))
    throw std::runtime_error(paths.config.string() + " not found: not a run directory");
  const fs::path checkpoint = paths.checkpoints / "last.pt";
  if (!fs::is_regular_file(checkpoint))
    throw std::runtime_error(checkpoint.string() +
                             " not found: the run has not trained yet (run it with 'workbench "
                             "run')");
  const RunConfig config = load_run_config(paths.config, registry);
  auto train_data = open_data(config.settings.data, Split::Train);
  const DataShape shape{train_data->channels(), train_data->image_size(), train_data->classes()};
  auto comm = make_single_process_communicator();
  Model model = build_model(config, registry, shape, comm.get());
  CheckpointState state = checkpoint_state(model);  // the trainer's module names

  ExportResult result;
  result.step = load_checkpoint(checkpoint, state);
  result.dir = options.out.empty() ? paths.dir / "export" : options.out;
  if (options.momentum && !model.momentum)
    throw std::runtime_error(paths.dir.string() +
                             ": --momentum, but the run has no momentum encoder (no loss asks "
                             "for one)");

  const StateDict backbone = module_state(*model.backbone);
  result.timm_names = has_timm_layout(backbone);
  json::Value info = json::Value::object();
  info.set("format", json::Value::of("workbench-export"));
  info.set("format_version", json::Value::of(1));
  info.set("naming", json::Value::of(result.timm_names ? "timm" : "workbench"));
  json::Value bb = json::Value::object();
  bb.set("plugin", json::Value::of(config.backbone.plugin));
  bb.set("params", params_json(config.backbone.params));
  bb.set("feature_dim", json::Value::of(model.backbone->feature_dim()));
  bb.set("patch_grid", json::Value::of(model.backbone->patch_grid()));
  bb.set("moe_blocks", ints(model.backbone->moe_blocks()));
  bb.set("experts", json::Value::of(model.backbone->experts()));
  bb.set("image_size", json::Value::of(shape.image_size));
  bb.set("channels", json::Value::of(shape.channels));
  info.set("backbone", std::move(bb));
  json::Value timm_kwargs;
  if (result.timm_names) {
    info.set("architecture", vit_architecture(backbone, config, *model.backbone, timm_kwargs));
    info.set("timm_kwargs", timm_kwargs);
  }
  json::Value names = json::Value::object();  // exported name -> workbench name
  for (const auto& [name, t] : backbone)
    names.set(result.timm_names ? timm_name(name)->name : name, json::Value::of(name));
  info.set("names", std::move(names));
  json::Value run = json::Value::object();
  run.set("experiment", json::Value::of(paths.dir.parent_path().filename().string()));
  run.set("point_id", json::Value::of(paths.dir.filename().string()));
  run.set("step", json::Value::of(result.step));
  run.set("config", json::Value::of(config.toml));
  info.set("run", std::move(run));
  info.set("workbench_version", json::Value::of(WORKBENCH_VERSION));

  Writer w{result.dir, {}, &result};
  w.metadata["format"] = "workbench-export";
  w.metadata["naming"] = result.timm_names ? "timm" : "workbench";
  w.metadata["architecture"] =
      json::dump(info.find("architecture") ? *info.find("architecture") : *info.find("backbone"));
  const auto exported = [&](const StateDict& s) { return result.timm_names ? to_timm(s) : s; };
  w.write("backbone", exported(backbone));
  if (options.momentum) w.write("momentum", exported(module_state(*model.momentum)));
  if (options.heads) {
    StateDict heads;
    for (std::size_t i = 0; i < model.losses.size(); ++i)
      for (auto& [name, t] : module_state(*model.losses[i]))
        heads.emplace_back(loss_prefix(config, i) + name, t);
    if (heads.empty())
      throw std::runtime_error(paths.dir.string() +
                               ": --heads, but no loss of the run has weights");
    w.write("heads", heads);
  }
  if (options.samples > 0) {
    w.metadata.erase("architecture");
    w.write("samples", sample_features(config, model, options.samples, shape.image_size));
  }
  info.set("files", w.files);
  const fs::path json_file = result.dir / "backbone.json";
  write_file_atomic(json_file, json::dump(info, 2) + "\n");
  result.files.push_back(json_file);
  return result;
}

}  // namespace wb
