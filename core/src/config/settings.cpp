#include "config/settings.h"

#include "config/schema.h"

namespace wb {

namespace {

// `table` with the defaults of `schema` for the keys it lacks.
Params with_defaults(const Params& table, const std::vector<ParamSpec>& schema) {
  Params out = table;
  for (const auto& spec : schema)
    if (!out.has(spec.name) && spec.default_value) out.set(spec.name, *spec.default_value);
  return out;
}

}  // namespace

RunSettings run_settings(const Params& run) {
  RunSettings s;
  s.seed = static_cast<std::uint64_t>(run.integer("seed"));
  s.device = run.text("device");
  s.threads = static_cast<int>(run.integer("threads"));
  s.workers = static_cast<int>(run.integer("workers"));
  return s;
}

TrainSettings train_settings(const Params& t) {
  TrainSettings s;
  s.epochs = t.real("epochs");
  s.steps = t.integer("steps");
  s.batch = t.integer("batch");
  s.base_lr = t.real("base_lr");
  s.linear_lr_scaling = t.text("lr_scaling") == "linear";
  s.min_lr = t.real("min_lr");
  s.warmup_epochs = t.real("warmup_epochs");
  s.weight_decay = t.real("weight_decay");
  const std::vector<double> betas = t.reals("betas");  // two values: validate_run checks
  s.beta1 = betas.at(0);
  s.beta2 = betas.at(1);
  s.clip_grad = t.real("clip_grad");
  s.bf16 = t.text("precision") == "bf16";
  s.log_every = t.integer("log_every");
  s.stats_every = t.integer("stats_every");
  s.checkpoint_every = t.integer("checkpoint_every");
  s.momentum = t.real("momentum");
  s.temperature = t.real("temperature");
  s.expert_parallel = t.boolean("expert_parallel");
  return s;
}

ViewSettings view_settings(const Params& views) {
  return {views.text("recipe")};
}

DataSettings data_settings(const Params& table) {
  const Params d = with_defaults(table, data_schema());
  DataSettings s;
  s.dataset = d.text("dataset");
  s.path = d.text("path");
  s.image_size = d.integer("image_size");
  s.num_classes = d.integer("num_classes");
  s.val_fraction = d.real("val_fraction");
  s.label_fraction = d.real("label_fraction");
  s.shots = d.integer("shots");
  s.classes = d.integers("classes");
  s.relabel = d.boolean("relabel");
  s.channels = d.integer("channels");
  s.subset_seed = static_cast<std::uint64_t>(d.integer("subset_seed"));
  s.train_limit = d.integer("train_limit");
  s.test_limit = d.integer("test_limit");
  s.clusters = d.text("clusters");
  return s;
}

}  // namespace wb
