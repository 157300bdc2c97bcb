// Run configurations: core schemas, validation with positions, canonical TOML and point ids.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>
#include <vector>

#include "config/run_config.h"
#include "config/schema.h"
#include "fixture_config.h"
#include "fixture_temp_dir.h"

namespace {

using namespace wb::test;  // FakePlugins, Caught, config_error, contains, position

struct Fixture : FakePlugins {
  wb::RunConfig parse(const std::string& text) {
    return wb::parse_run_config(text, "cfg.toml", registry);
  }
};

const char* kMinimal = R"(
backbone = "vit"
losses = [{ plugin = "moco" }]
)";

}  // namespace

TEST_CASE("core schemas declare every key with a doc, view overrides have no defaults") {
  std::vector<std::string> names;
  for (const auto& s : wb::core_sections()) {
    names.push_back(s.name);
    for (const auto& p : *s.params) CHECK_MESSAGE(!p.doc.empty(), s.name << "." << p.name);
  }
  CHECK(names == std::vector<std::string>{"", "data", "datasets.<name>", "views", "views.view1",
                                          "views.view2", "train", "init"});
  std::vector<std::string> view_keys;
  for (const auto& p : wb::view_override_schema()) {
    view_keys.push_back(p.name);
    CHECK_FALSE(p.default_value.has_value());
  }
  CHECK(view_keys == std::vector<std::string>{"size",
                                              "random_crop",
                                              "scale_min",
                                              "scale_max",
                                              "ratio_min",
                                              "ratio_max",
                                              "center_crop",
                                              "flip_p",
                                              "jitter_p",
                                              "brightness",
                                              "contrast",
                                              "saturation",
                                              "hue",
                                              "grayscale_p",
                                              "blur_p",
                                              "blur_sigma_min",
                                              "blur_sigma_max",
                                              "solarize_p",
                                              "solarize_threshold",
                                              "mean",
                                              "std"});
  std::vector<std::string> top;
  for (const auto& p : wb::run_schema()) top.push_back(p.name);
  CHECK(top == std::vector<std::string>{"seed", "device", "threads", "workers"});
}

TEST_CASE("parse_run_config fills defaults, converts integers to floats and expands plugins") {
  Fixture f;
  wb::RunConfig c = f.parse(R"(
seed = 3
backbone = { plugin = "vit", dim = 64 }
gate = "noisy_topk"
losses = [{ plugin = "moco" }, { plugin = "ogar", matcher = "fsm" }]
[train]
epochs = 2
[views.view1]
solarize_p = 0.2
)");
  CHECK(c.run.integer("seed") == 3);
  CHECK(c.run.text("device") == "auto");
  CHECK(c.run.integer("workers") == 2);
  CHECK(c.backbone.plugin == "vit");
  CHECK(c.backbone.params.integer("dim") == 64);
  CHECK(c.backbone.params.integer("depth") == 6);
  CHECK(c.gate.plugin == "noisy_topk");
  CHECK(c.gate.params.integer("k") == 2);
  REQUIRE(c.losses.size() == 2);
  CHECK(c.losses[0].params.real("tau") == doctest::Approx(0.2));
  const wb::PluginRef& m = c.losses[1].params.plugin("matcher");
  CHECK(m.kind == wb::Kind::Matcher);
  CHECK(m.name == "fsm");
  CHECK(m.params.real("threshold") == 0.5);
  CHECK(c.evaluators.empty());
  // An integer given for a float key is stored as a float.
  CHECK(std::holds_alternative<double>(c.train.at("epochs")));
  CHECK(c.train.real("epochs") == 2.0);
  CHECK(c.train.integer("batch") == 256);
  CHECK(c.train.reals("betas") == std::vector<double>{0.9, 0.999});
  CHECK(c.data.text("dataset") == "fashion_mnist");
  CHECK(c.views.text("recipe") == "auto");
  // Only the overrides the user set are kept.
  CHECK(c.view1.values().size() == 1);
  CHECK(c.view1.real("solarize_p") == 0.2);
  CHECK(c.view2.values().empty());

  wb::RunConfig no_gate = f.parse(kMinimal);
  CHECK(no_gate.gate.plugin.empty());
  // The default nested matcher comes with its own defaults.
  wb::RunConfig ogar = f.parse("backbone = \"vit\"\nlosses = [\"ogar\"]\n");
  CHECK(ogar.losses[0].params.plugin("matcher").name == "overlap");
  CHECK(ogar.losses[0].params.plugin("matcher").params.real("lambda") == 0.2);
}

TEST_CASE("FNV-1a and the id are computed as design.md says") {
  CHECK(wb::fnv1a64("") == 0xcbf29ce484222325ull);
  CHECK(wb::fnv1a64("a") == 0xaf63dc4c8601ec8cull);
  CHECK(wb::fnv1a64("foobar") == 0x85944171f73967e8ull);
  Fixture f;
  wb::RunConfig c = f.parse(kMinimal);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(wb::fnv1a64(wb::canonical_toml(c, false))));
  CHECK(c.id == std::string(hex, 12));
  CHECK(c.id.size() == 12);
  CHECK(c.toml == wb::canonical_toml(c));
}

TEST_CASE("equal configurations get equal ids, any change of value changes the id") {
  Fixture f;
  const wb::RunConfig a = f.parse(R"(
backbone = { plugin = "vit", dim = 64 }
losses = [{ plugin = "ogar", alpha = 0.5 }]
[train]
epochs = 3
batch = 128
)");
  // Keys in another order, defaults spelled out, an integer written as a float, the nested
  // matcher written out with its default parameter.
  const wb::RunConfig b = f.parse(R"(
[train]
batch = 128
epochs = 3.0
base_lr = 5e-4
betas = [0.9, 0.999]
[[losses]]
matcher = { lambda = 0.2, plugin = "overlap" }
alpha = 0.5
plugin = "ogar"
mode = "sparse"
[backbone]
depth = 6
dim = 64
plugin = "vit"
[data]
dataset = "fashion_mnist"
)");
  CHECK(a.id == b.id);
  CHECK(a.toml == b.toml);

  auto text = [](const char* dim, const char* alpha, const char* batch, const char* epochs) {
    return std::string("backbone = { plugin = \"vit\", dim = ") + dim +
           " }\nlosses = [{ plugin = \"ogar\", alpha = " + alpha +
           " }]\n[train]\nepochs = " + epochs + "\nbatch = " + batch + "\n";
  };
  CHECK(f.parse(text("64", "0.5", "128", "3")).id == a.id);
  CHECK(f.parse(text("65", "0.5", "128", "3")).id != a.id);
  CHECK(f.parse(text("64", "0.51", "128", "3")).id != a.id);
  CHECK(f.parse(text("64", "0.5", "129", "3")).id != a.id);
  CHECK(f.parse(text("64", "0.5", "128", "3.5")).id != a.id);
  CHECK(f.parse("seed = 1\n" + std::string(kMinimal)).id != f.parse(kMinimal).id);
  CHECK(f.parse(std::string(kMinimal) + "gate = \"fixed\"\n").id != f.parse(kMinimal).id);

  // Evaluators do not change the id, but they are part of the canonical text.
  const wb::RunConfig with_eval = f.parse(R"(
backbone = { plugin = "vit", dim = 64 }
losses = [{ plugin = "ogar", alpha = 0.5 }]
evaluators = [{ plugin = "knn", k = 5 }, "linear"]
[train]
epochs = 3
batch = 128
)");
  CHECK(with_eval.id == a.id);
  CHECK(with_eval.toml != a.toml);
  CHECK(contains(with_eval.toml, "[[evaluators]]\nplugin = \"knn\"\nk = 5\n"));
}

TEST_CASE("canonical TOML reads back to the same configuration and id") {
  Fixture f;
  const wb::RunConfig a = f.parse(R"(
seed = 7
device = "cpu"
backbone = { plugin = "vit", experts = 4 }
gate = { plugin = "noisy_topk", k = 1, noise_std = 0.333333333333333314829616256247 }
losses = [{ plugin = "moco", tau = 1e-7 }, { plugin = "ogar", matcher = { plugin = "fsm", threshold = 0.1 } }]
evaluators = [{ plugin = "knn", k = 3 }]
[data]
path = "/data/with \"quotes\" and \\ back\tslash"
classes = [0, 2, 4]
label_fraction = 0.1
[datasets."cifar.10"]
dataset = "cifar10"
[views.view2]
mean = [0.5]
random_crop = false
[train]
base_lr = 0.00015
betas = [0.9, 0.95]
)");
  const wb::RunConfig b = wb::parse_run_config(a.toml, "config.toml", f.registry);
  CHECK(b.toml == a.toml);
  CHECK(b.id == a.id);
  // Values survive exactly, not just to printing precision.
  CHECK(b.gate.params.real("noise_std") == a.gate.params.real("noise_std"));
  CHECK(b.gate.params.real("noise_std") == 1.0 / 3.0);
  CHECK(b.losses[0].params.real("tau") == 1e-7);
  CHECK(b.train.real("base_lr") == 0.00015);
  CHECK(b.data.text("path") == "/data/with \"quotes\" and \\ back\tslash");
  CHECK(b.data.integers("classes") == std::vector<std::int64_t>{0, 2, 4});
  REQUIRE(b.datasets.count("cifar.10") == 1);
  CHECK(b.datasets.at("cifar.10").text("dataset") == "cifar10");
  CHECK(b.view2.boolean("random_crop") == false);
  CHECK(b.view2.reals("mean") == std::vector<double>{0.5});
  CHECK(b.losses[1].params.plugin("matcher").params.real("threshold") == 0.1);
  CHECK(b.evaluators.size() == 1);
  // Keys are sorted inside each table; a plugin table starts with its name.
  CHECK(contains(a.toml, "device = \"cpu\"\nseed = 7\nthreads = 0\nworkers = 2\n"));
  CHECK(contains(a.toml, "[backbone]\nplugin = \"vit\"\ndepth = 6\ndim = 192\nexperts = 4\n"));
  CHECK(contains(a.toml, "matcher = { plugin = \"fsm\", threshold = 0.1 }"));
}

TEST_CASE("errors name file, line and column of the offending key or value") {
  Fixture f;
  SUBCASE("typo'd key, with a suggestion and the valid keys") {
    const std::string text =
        "backbone = \"vit\"\nlosses = [\"moco\"]\n[train]\nbatch = 64\n  epochz = 3\n";
    Caught e = config_error([&] { f.parse(text); });
    CHECK(e.file == "cfg.toml");
    CHECK(std::make_pair(e.line, e.column) == position(text, "epochz"));
    CHECK(e.line == 5);
    CHECK(e.column == 3);
    CHECK(contains(e.what, "cfg.toml:5:3: unknown key 'epochz' in train; did you mean 'epochs'?"));
    CHECK(contains(e.what, "valid keys: base_lr, batch, betas, checkpoint_every, clip_grad,"));
  }
  SUBCASE("wrong type names the expected type") {
    const std::string text = std::string(kMinimal) + "[train]\nbatch = \"big\"\n";
    Caught e = config_error([&] { f.parse(text); });
    CHECK(std::make_pair(e.line, e.column) == position(text, "\"big\""));
    CHECK(contains(e.message, "train.batch: expected integer >= 1, got string \"big\""));
  }
  SUBCASE("out of range names the range") {
    const std::string text = std::string(kMinimal) + "[train]\nbetas = [0.9, 1.5]\n";
    Caught e = config_error([&] { f.parse(text); });
    CHECK(std::make_pair(e.line, e.column) == position(text, "1.5"));
    CHECK(contains(e.message, "train.betas[1] = 1.5 is out of range"));
    CHECK(contains(e.message, "list of floats in [0.0, 1.0)"));
  }
  SUBCASE("non-finite numbers are refused where they are written") {
    const std::vector<std::pair<std::string, std::string>> values = {
        {"inf", "inf"}, {"-inf", "-inf"}, {"nan", "nan"}, {"+inf", "inf"}};  // as written back
    for (const auto& [value, shown] : values) {
      const std::string text = std::string(kMinimal) + "[train]\nbase_lr = " + value + "\n";
      Caught e = config_error([&] { f.parse(text); });
      CHECK(std::make_pair(e.line, e.column) == position(text, value));
      CHECK(contains(e.message, "train.base_lr = " + shown + " is not a finite number"));
    }
    const std::string list = std::string(kMinimal) + "[train]\nbetas = [0.9, nan]\n";
    Caught e = config_error([&] { f.parse(list); });
    CHECK(std::make_pair(e.line, e.column) == position(list, "nan"));
    CHECK(contains(e.message, "train.betas[1] = nan is not a finite number"));
    // A huge but finite value is a number: the schedule bounds it (test_schedule.cpp).
    CHECK_NOTHROW(f.parse(std::string(kMinimal) + "[train]\nepochs = 1e300\n"));
  }
  SUBCASE("a string not among the choices lists them") {
    const std::string text = std::string(kMinimal) + "device = \"gpu\"\n";
    Caught e = config_error([&] { f.parse(text); });
    CHECK(std::make_pair(e.line, e.column) == position(text, "\"gpu\""));
    CHECK(contains(e.message, "device = \"gpu\" is not allowed"));
    CHECK(contains(e.message, "one of auto, cpu, cuda"));
  }
  SUBCASE("unknown plugin lists the available ones") {
    const std::string text = "losses = [\"moco\"]\nbackbone = { plugin = \"vitt\" }\n";
    Caught e = config_error([&] { f.parse(text); });
    CHECK(std::make_pair(e.line, e.column) == position(text, "\"vitt\""));
    CHECK(contains(
        e.message,
        "backbone: unknown backbone plugin 'vitt'; did you mean 'vit'? (available: mlp, vit)"));
  }
  SUBCASE("unknown plugin parameter lists the plugin's parameters") {
    const std::string text =
        "backbone = \"vit\"\nlosses = [\"moco\", { plugin = \"ogar\", alpah = 0.1 }]\n";
    Caught e = config_error([&] { f.parse(text); });
    CHECK(std::make_pair(e.line, e.column) == position(text, "alpah"));
    CHECK(contains(e.message,
                   "unknown key 'alpah' in losses.ogar (loss 'ogar'); did you mean "
                   "'alpha'? (valid keys: alpha, matcher, mode, plugin, weight)"));
  }
  SUBCASE("nested matcher parameters are validated too") {
    const std::string text =
        "backbone = \"vit\"\n[[losses]]\nplugin = \"ogar\"\nmatcher = { plugin = \"overlap\", "
        "lambda = 2.0 }\n";
    Caught e = config_error([&] { f.parse(text); });
    CHECK(std::make_pair(e.line, e.column) == position(text, "2.0"));
    CHECK(contains(e.message,
                   "losses.ogar.matcher.lambda = 2.0 is out of range (expected float "
                   "in [0.0, 1.0])"));
    const std::string typo =
        "backbone = \"vit\"\nlosses = [{ plugin = \"ogar\", matcher = { plugin = \"overlap\", "
        "lamda = 0.1 } }]\n";
    e = config_error([&] { f.parse(typo); });
    CHECK(std::make_pair(e.line, e.column) == position(typo, "lamda"));
    CHECK(contains(e.message,
                   "unknown key 'lamda' in losses.ogar.matcher (matcher 'overlap'); "
                   "did you mean 'lambda'?"));
    const std::string unknown =
        "backbone = \"vit\"\nlosses = [{ plugin = \"ogar\", matcher = \"iou\" }]\n";
    e = config_error([&] { f.parse(unknown); });
    CHECK(contains(e.message, "unknown matcher plugin 'iou' (available: fsm, overlap)"));
  }
  SUBCASE("a loss without plugin, a missing backbone, a TOML syntax error") {
    Caught e = config_error([&] { f.parse("backbone = \"vit\"\nlosses = [{ tau = 0.1 }]\n"); });
    CHECK(e.line == 2);
    CHECK(contains(e.message, "losses.0: missing 'plugin'"));
    CHECK(contains(e.message, "available: moco, ogar"));
    e = config_error([&] { f.parse("losses = [\"moco\"]\n"); });
    CHECK(contains(e.message, "has no backbone"));
    e = config_error([&] { f.parse("backbone = \"vit\"\nlosses = [\"moco\"\n"); });
    CHECK(e.line >= 2);
    CHECK(contains(e.what, "cfg.toml:"));
    CHECK(contains(e.message, "TOML syntax error"));
  }
  SUBCASE("a section given as a scalar") {
    const std::string text = std::string(kMinimal) + "train = 3\n";
    Caught e = config_error([&] { f.parse(text); });
    CHECK(std::make_pair(e.line, e.column) == position(text, "3\n"));
    CHECK(contains(e.message, "train: expected a table, got integer 3"));
  }
}

TEST_CASE("load_run_config reads a file and names it in errors") {
  Fixture f;
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "wb_test_config";
  std::filesystem::create_directories(dir);
  const wb::RunConfig a = f.parse(kMinimal);
  {
    std::FILE* out = std::fopen((dir / "config.toml").c_str(), "w");
    REQUIRE(out);
    std::fputs(a.toml.c_str(), out);
    std::fclose(out);
  }
  CHECK(wb::load_run_config(dir / "config.toml", f.registry).id == a.id);
  Caught e = config_error([&] { wb::load_run_config(dir / "missing.toml", f.registry); });
  CHECK(contains(e.what, "missing.toml"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("a nested plugin that defaults to none stays none through the canonical text") {
  Fixture f;
  f.registry.add_loss(
      "maybe", "fake loss with an optional matcher",
      {wb::ParamSpec::plugin("matcher", wb::Kind::Matcher, "", "none unless set")},
      [](const wb::Params&, const wb::LossContext&) { return std::shared_ptr<wb::Loss>(); });
  const wb::RunConfig off = f.parse("backbone = \"vit\"\nlosses = [\"maybe\"]\n");
  CHECK(off.losses[0].params.plugin("matcher").name.empty());
  CHECK(contains(off.toml, "plugin = \"maybe\"\nmatcher = \"\"\n"));
  const wb::RunConfig back = wb::parse_run_config(off.toml, "config.toml", f.registry);
  CHECK(back.id == off.id);
  const wb::RunConfig on =
      f.parse("backbone = \"vit\"\nlosses = [{ plugin = \"maybe\", matcher = \"fsm\" }]\n");
  CHECK(on.losses[0].params.plugin("matcher").name == "fsm");
  CHECK(on.id != off.id);
  // "" is no plugin name where the default is a real plugin.
  Caught e = config_error(
      [&] { f.parse("backbone = \"vit\"\nlosses = [{ plugin = \"ogar\", matcher = \"\" }]\n"); });
  CHECK(contains(e.message, "unknown matcher plugin ''"));
}

// A path that a run's files name, looked up from a run directory of the same runs folder.
TEST_CASE(
    "locate_referenced_run: the same experiment's point in the anchor's folder, else as written") {
  wbtest::TempDir dir;
  const std::filesystem::path folder = dir.path() / "new" / "exp";
  std::filesystem::create_directories(folder / "aaa");
  std::filesystem::create_directories(folder / "bbb");
  std::ofstream(folder / "aaa" / "clusters.h5") << "x";
  const std::filesystem::path anchor = folder / "bbb";
  // A point of the same experiment, relative or absolute, with or without a file in it.
  CHECK(wb::locate_referenced_run("runs/exp/aaa", anchor) == (folder / "aaa").string());
  CHECK(wb::locate_referenced_run("/old/place/exp/aaa", anchor) == (folder / "aaa").string());
  CHECK(wb::locate_referenced_run("runs/exp/aaa/clusters.h5", anchor) ==
        (folder / "aaa" / "clusters.h5").string());
  CHECK(wb::locate_referenced_run("runs/exp/aaa", anchor.string() + "/") ==
        (folder / "aaa").string());
  // Not in the anchor's folder, another experiment, no point after the experiment, empty:
  // unchanged.
  CHECK(wb::locate_referenced_run("runs/exp/ccc", anchor) == "runs/exp/ccc");
  CHECK(wb::locate_referenced_run("runs/other/aaa", anchor) == "runs/other/aaa");
  CHECK(wb::locate_referenced_run("runs/exp", anchor) == "runs/exp");
  CHECK(wb::locate_referenced_run("", anchor).empty());
}
