// Evaluators that learn from part of the labels: semi_supervised (label fraction, linear and
// fine-tuning), few_shot (k shots per class, several seeds, other data sets) and finetune
// (MoCE's fine-tuning transfer: lr on a validation split, repeats).
#include <ATen/ATen.h>
#include <doctest/doctest.h>

#include <algorithm>

#include "built_plugins.h"
#include "test_eval_helpers.h"
#include "workbench/eval_tools.h"

using wbtest::FakeContext;
using wbtest::run_evaluator;

namespace {

std::vector<std::int64_t> as_counts(const at::Tensor& t) {
  std::vector<std::int64_t> out;
  for (double v : wbtest::values(t)) out.push_back(static_cast<std::int64_t>(v));
  return out;
}

// Features whose labels match the data set's (the real context extracts them in item order).
void serve_clusters(FakeContext& ctx, const std::vector<std::int64_t>& train_counts,
                    const std::vector<std::int64_t>& test_counts, const std::string& name = "") {
  const wb::FeatureSet train = wbtest::clusters(train_counts, 8, 6.0, 11);
  ctx.set_features(wb::Split::Train, train, name);
  ctx.set_features(wb::Split::Test, wbtest::clusters(test_counts, 8, 6.0, 12), name);
  ctx.datasets[FakeContext::key(name, wb::Split::Train)] =
      std::make_shared<wbtest::SyntheticDataset>(wbtest::labels_with_counts(train_counts), 1, 4);
}

}  // namespace

TEST_CASE("semi_supervised 1 %: linear heads on exactly the class-balanced labelled subset") {
  FakeContext ctx;
  serve_clusters(ctx, {1000, 600, 400}, {50, 50, 50});
  const wb::EvalResult r = run_evaluator("semi_supervised", ctx, {{"epochs", std::int64_t{30}}});
  // round(1 % of each class).
  CHECK(as_counts(r.arrays.at("labelled_per_class")) == std::vector<std::int64_t>{10, 6, 4});
  CHECK(r.scalars.at("labelled") == 20);
  CHECK(r.scalars.at("finetune") == 0);
  CHECK(r.scalars.at("top1") >= 95.0);
  // The lr is chosen before the test split is read.
  CHECK(ctx.first("features  test") == ctx.events.size() - 2);  // then only the last info line
}

TEST_CASE("semi_supervised 10 %: fine-tunes a copy with the loss's head, chosen on validation") {
  at::manual_seed(7);  // the initial weights: independent of the tests that ran before
  FakeContext ctx;
  const auto train_labels = wbtest::labels_with_counts({100, 100, 100});
  ctx.datasets[FakeContext::key("", wb::Split::Train)] =
      std::make_shared<wbtest::ClassImages>(train_labels, 4, 1);
  ctx.datasets[FakeContext::key("", wb::Split::Test)] =
      std::make_shared<wbtest::ClassImages>(wbtest::labels_with_counts({20, 20, 20}), 4, 2);
  ctx.image_size = 4;
  auto original = std::make_shared<wbtest::LinearBackbone>(16, 5);
  const at::Tensor original_weight = original->proj->weight.clone();
  ctx.model = original;
  std::vector<std::shared_ptr<wbtest::HeadLoss>> heads;
  ctx.copy = [&] {
    auto backbone = std::make_shared<wbtest::LinearBackbone>(16, 5);
    auto loss = std::make_shared<wbtest::HeadLoss>(5);
    {
      at::NoGradGuard no_grad;
      backbone->proj->weight.copy_(original->proj->weight);
      backbone->proj->bias.copy_(original->proj->bias);
    }
    heads.push_back(loss);
    return wb::TrainableCopy{backbone, {loss}};
  };
  const wb::EvalResult r = run_evaluator("semi_supervised", ctx,
                                         {{"fraction", 0.1},
                                          {"finetune_lrs", std::vector<double>{1e-4, 3e-2}},
                                          {"finetune_epochs", std::int64_t{15}},
                                          {"batch", std::int64_t{10}},
                                          {"val_fraction", 0.2},
                                          {"crop_scale_min", 1.0}});
  CHECK(r.scalars.at("finetune") == 1);  // mode auto at 10 %
  CHECK(as_counts(r.arrays.at("labelled_per_class")) == std::vector<std::int64_t>{10, 10, 10});
  REQUIRE(heads.size() == 2);  // one copy per lr
  for (const auto& h : heads) CHECK(h->calls > 0);
  const auto val = wbtest::values(r.arrays.at("val_top1_per_lr"));
  REQUIRE(val.size() == 2);
  CHECK(r.scalars.at("lr") == (val[1] > val[0] ? 3e-2 : 1e-4));
  CHECK(r.scalars.at("top1") >= 90.0);
  // The model other evaluators see is untouched.
  CHECK(at::equal(original->proj->weight, original_weight));
}

TEST_CASE("semi_supervised without a fine-tuning head says so and trains a head on CLS") {
  FakeContext ctx;
  const auto labels = wbtest::labels_with_counts({40, 40});
  ctx.datasets[FakeContext::key("", wb::Split::Train)] =
      std::make_shared<wbtest::ClassImages>(labels, 4, 3);
  ctx.datasets[FakeContext::key("", wb::Split::Test)] =
      std::make_shared<wbtest::ClassImages>(wbtest::labels_with_counts({10, 10}), 4, 4);
  ctx.image_size = 4;
  ctx.model = std::make_shared<wbtest::LinearBackbone>(16, 3);
  ctx.copy = [] { return wb::TrainableCopy{std::make_shared<wbtest::LinearBackbone>(16, 3), {}}; };
  const wb::EvalResult r = run_evaluator("semi_supervised", ctx,
                                         {{"fraction", 0.5},
                                          {"mode", std::string("finetune")},
                                          {"finetune_lrs", std::vector<double>{3e-2}},
                                          {"finetune_epochs", std::int64_t{5}},
                                          {"batch", std::int64_t{8}}});
  CHECK(ctx.first("info semi_supervised: no loss provides a fine-tuning head") < ctx.events.size());
  CHECK(as_counts(r.arrays.at("labelled_per_class")) == std::vector<std::int64_t>{20, 20});
  CHECK(r.scalars.at("top1") >= 90.0);
}

TEST_CASE("fine-tuning helper: a budget in epochs, the claimed view, routing as in evaluation") {
  const auto data =
      std::make_shared<wbtest::ClassImages>(wbtest::labels_with_counts({10, 10}), 4, 5);
  auto fit = [&](const wb::FinetuneOptions& options) {
    auto backbone = std::make_shared<wbtest::LinearBackbone>(16, 3);
    wb::FinetuneModel model(wb::TrainableCopy{backbone, {}}, 2, false, c10::Device(c10::kCPU));
    wb::finetune(model, data, options, c10::Device(c10::kCPU));
    CHECK_FALSE(backbone->is_training());  // left in evaluation mode
    return backbone->seen;
  };
  wb::FinetuneOptions options;
  options.recipe = wb::view_preset("eval");
  options.recipe.size = 4;
  options.loader.batch_size = 8;
  options.loader.workers = 0;
  options.steps = 5;
  // The defaults: `steps` steps, gates routing as in training, view 0.
  auto seen = fit(options);
  REQUIRE(seen.size() == 5);
  for (const auto& s : seen) {
    CHECK(s.routing_training);
    CHECK(s.view == 0);
    CHECK(s.module_training);
  }
  // semi_supervised's path: 3 passes over 20 images in full batches of 8 (2 per pass), every
  // forward claiming view 1 and routing as in evaluation while the modules train.
  options.epochs = 3;
  options.view = 1;
  options.route_as_training = false;
  seen = fit(options);
  REQUIRE(seen.size() == 6);
  for (const auto& s : seen) {
    CHECK_FALSE(s.routing_training);
    CHECK(s.view == 1);
    CHECK(s.module_training);
  }
}

TEST_CASE("few_shot: k per class (fewer when a class is smaller), mean and std over seeds") {
  FakeContext ctx;
  serve_clusters(ctx, {30, 20, 3}, {30, 30, 30}, "transfer");
  const wb::EvalResult r = run_evaluator("few_shot", ctx,
                                         {{"dataset", std::string("transfer")},
                                          {"seeds", std::int64_t{3}},
                                          {"epochs", std::int64_t{30}}});
  CHECK(as_counts(r.arrays.at("4shot_per_class")) == std::vector<std::int64_t>{4, 4, 3});
  CHECK(as_counts(r.arrays.at("10shot_per_class")) == std::vector<std::int64_t>{10, 10, 3});
  for (const std::string k : {"4shot", "10shot"}) {
    const auto per_seed = wbtest::values(r.arrays.at(k));
    REQUIRE(per_seed.size() == 3);
    const wb::MeanStd m = wb::mean_std(per_seed);
    CHECK(r.scalars.at(k + "_mean") == doctest::Approx(m.mean));
    CHECK(r.scalars.at(k + "_std") == doctest::Approx(m.std));
    CHECK(r.scalars.at(k + "_mean") >= 95.0);
  }
  // Only the named data set was read.
  for (const auto& e : ctx.events)
    if (e.rfind("features", 0) == 0) CHECK(e.find("transfer") != std::string::npos);
}

TEST_CASE("few_shot: different seeds draw different shots") {
  const at::Tensor labels =
      at::tensor(wbtest::labels_with_counts({50, 50}), at::TensorOptions().dtype(at::kLong));
  CHECK(wb::draw_shots(labels, 4, 0).drawn != wb::draw_shots(labels, 4, 1).drawn);
  CHECK(wb::mean_std({1, 2, 3, 4}).std == doctest::Approx(std::sqrt(5.0 / 3.0)));
}

TEST_CASE("finetune: lr chosen on a validation split, then repeats on the whole train split") {
  FakeContext ctx;
  ctx.datasets[FakeContext::key("transfer", wb::Split::Train)] =
      std::make_shared<wbtest::ClassImages>(wbtest::labels_with_counts({30, 30, 30}), 4, 5);
  ctx.datasets[FakeContext::key("transfer", wb::Split::Test)] =
      std::make_shared<wbtest::ClassImages>(wbtest::labels_with_counts({20, 20, 20}), 4, 6);
  ctx.image_size = 4;
  auto original = std::make_shared<wbtest::LinearBackbone>(16, 5);
  const at::Tensor original_weight = original->proj->weight.clone();
  ctx.model = original;
  int copies = 0;
  std::vector<std::shared_ptr<wbtest::HeadLoss>> heads;
  ctx.copy = [&] {
    ++copies;
    heads.push_back(std::make_shared<wbtest::HeadLoss>(5));
    auto backbone = std::make_shared<wbtest::LinearBackbone>(16, 5);
    at::NoGradGuard no_grad;
    backbone->proj->weight.copy_(original->proj->weight);
    backbone->proj->bias.copy_(original->proj->bias);
    return wb::TrainableCopy{backbone, {heads.back()}};
  };
  const wb::EvalResult r = run_evaluator("finetune", ctx,
                                         {{"dataset", std::string("transfer")},
                                          {"lrs", std::vector<double>{1e-5, 3e-2}},
                                          {"steps", std::int64_t{80}},
                                          {"batch", std::int64_t{10}},
                                          {"repeats", std::int64_t{2}},
                                          {"val_fraction", 0.2},
                                          {"crop_scale_min", 1.0}});
  CHECK(copies == 4);  // one per lr, one per repeat: other evaluators' model is never trained
  CHECK(at::equal(original->proj->weight, original_weight));
  const auto val = wbtest::values(r.arrays.at("val_top1_per_lr"));
  REQUIRE(val.size() == 2);
  CHECK(r.scalars.at("lr") == doctest::Approx(val[1] > val[0] ? 3e-2 : 1e-5));
  CHECK(r.scalars.at("val_top1") == doctest::Approx(std::max(val[0], val[1])));
  const auto per_repeat = wbtest::values(r.arrays.at("top1_per_repeat"));
  REQUIRE(per_repeat.size() == 2);
  CHECK(r.scalars.at("top1") == doctest::Approx((per_repeat[0] + per_repeat[1]) / 2));
  CHECK(r.scalars.at("top1_std") == doctest::Approx(wb::mean_std(per_repeat).std));
  CHECK(r.scalars.at("top1") >= 90.0);
  // The loss's fine-tuning head is not used: the new classifier reads the CLS feature.
  for (const auto& h : heads) CHECK(h->calls == 0);
  CHECK(r.scalars.at("steps") == 80);
}

TEST_CASE("finetune: one learning rate needs no validation split") {
  FakeContext ctx;
  ctx.datasets[FakeContext::key("", wb::Split::Train)] =
      std::make_shared<wbtest::ClassImages>(wbtest::labels_with_counts({20, 20}), 4, 7);
  ctx.datasets[FakeContext::key("", wb::Split::Test)] =
      std::make_shared<wbtest::ClassImages>(wbtest::labels_with_counts({10, 10}), 4, 8);
  ctx.image_size = 4;
  ctx.model = std::make_shared<wbtest::LinearBackbone>(16, 3);
  ctx.copy = [] { return wb::TrainableCopy{std::make_shared<wbtest::LinearBackbone>(16, 3), {}}; };
  const wb::EvalResult r = run_evaluator("finetune", ctx,
                                         {{"lrs", std::vector<double>{3e-2}},
                                          {"steps", std::int64_t{40}},
                                          {"batch", std::int64_t{8}},
                                          {"repeats", std::int64_t{1}},
                                          {"crop_scale_min", 1.0}});
  CHECK(r.arrays.count("val_top1_per_lr") == 0);
  CHECK(r.scalars.count("top1_std") == 0);
  CHECK(r.scalars.at("lr") == doctest::Approx(3e-2));
  CHECK(r.scalars.at("top1") >= 90.0);
}

TEST_CASE("semi_supervised on a sep-ViT: fine-tuning the expert-1 path trains expert 1 only") {
  // A tiny sep-ViT: 4 x 4 grey images in 2 x 2 patches, block 1 a MoE block of two full-size
  // experts, the fixed gate (view i uses expert i).
  auto make = [] {
    wb::Params p = wb_test::plugins().defaults(wb::Kind::Backbone, "vit");
    p.set("patch", std::int64_t{2});
    p.set("dim", std::int64_t{8});
    p.set("depth", std::int64_t{2});
    p.set("heads", std::int64_t{2});
    p.set("experts", std::int64_t{2});
    p.set("expert_ratio", 4.0);
    p.set("moe_every", std::int64_t{2});
    wb::BackboneContext c;
    c.channels = 1;
    c.image_size = 4;
    c.make_gate = [](const wb::GateShape& s) {
      return wb_test::plugins().make_gate("fixed",
                                          wb_test::plugins().defaults(wb::Kind::Gate, "fixed"), s);
    };
    return wb_test::plugins().make_backbone("vit", p, c);
  };
  // The stacked expert tensors [E, ...] of the MoE block.
  auto experts = [](wb::Backbone& b) {
    std::map<std::string, at::Tensor> out;
    for (const auto& item : b.named_parameters()) {
      const std::string leaf = item.key().substr(item.key().rfind('.') + 1);
      if (leaf == "w1" || leaf == "b1" || leaf == "w2" || leaf == "b2")
        out[item.key()] = item.value().detach().clone();
    }
    return out;
  };

  for (const std::int64_t path : {0, 1}) {
    CAPTURE(path);
    at::manual_seed(8);
    FakeContext ctx;
    ctx.image_size = 4;
    ctx.datasets[FakeContext::key("", wb::Split::Train)] =
        std::make_shared<wbtest::ClassImages>(wbtest::labels_with_counts({30, 30, 30}), 4, 1);
    ctx.datasets[FakeContext::key("", wb::Split::Test)] =
        std::make_shared<wbtest::ClassImages>(wbtest::labels_with_counts({10, 10, 10}), 4, 2);
    auto original = make();
    ctx.model = original;
    const auto before = experts(*original);
    REQUIRE(before.size() == 4);
    std::shared_ptr<wb::Backbone> tuned;
    ctx.copy = [&] {
      tuned = make();
      at::NoGradGuard no_grad;
      auto src = original->named_parameters();
      for (auto& item : tuned->named_parameters()) item.value().copy_(src[item.key()]);
      return wb::TrainableCopy{tuned, {}};
    };
    // Weight decay 0: what moves is what the gradient reaches.
    const wb::EvalResult r = run_evaluator("semi_supervised", ctx,
                                           {{"fraction", 0.5},
                                            {"mode", std::string("finetune")},
                                            {"finetune_lrs", std::vector<double>{1e-2}},
                                            {"finetune_epochs", std::int64_t{2}},
                                            {"weight_decay", 0.0},
                                            {"batch", std::int64_t{8}},
                                            {"views", std::vector<std::int64_t>{path}}});
    CHECK(r.scalars.count(path == 0 ? "top1" : "top1_view1") == 1);
    REQUIRE(tuned);
    for (const auto& [name, after] : experts(*tuned)) {
      CAPTURE(name);
      const at::Tensor& was = before.at(name);
      // The evaluated expert moved, the other one is bit for bit what it was.
      CHECK_FALSE(at::equal(after[path], was[path]));
      CHECK(at::equal(after[1 - path], was[1 - path]));
    }
  }
}
