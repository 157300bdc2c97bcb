// The checks made before anything runs (config/point_checks.h, workbench/validation.h): the real
// plugins refuse impossible points (k above the experts, heads not dividing dim, a patch not
// dividing the image, a decoder whose heads do not divide its width, the fixed gate with more
// views than experts, an evaluator's view the gate does not route, two mask ratios, cuda without
// a GPU) at the file:line:column where the value was written, whether it came from [base], the
// grid, a profile or --set; `workbench run --dry-run` refuses them and trains nothing. The
// losses' checks declare what the built losses require.
#include <ATen/Context.h>
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "built_plugins.h"
#include "config/experiment.h"
#include "e2e_fixture.h"
#include "fixture_temp_dir.h"
#include "run/host_environment.h"
#include "test_data_files.h"
#include "test_ogar_helpers.h"  // loss_context
#include "workbench/loss.h"

namespace fs = std::filesystem;

namespace {

// Line numbers matter: the tests below name them.
const std::string kBase = R"([experiment]
name = "checks"

[base.data]
dataset = "fashion_mnist"
image_size = 28

[base.backbone]
plugin = "vit"
patch = 4
dim = 64
depth = 2
heads = 4
experts = 16
moe_every = 2

[base.gate]
plugin = "noisy_topk"
k = 2

[[base.losses]]
plugin = "moco"
)";

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const std::size_t at = text.find(from);
  REQUIRE_MESSAGE(at != std::string::npos, from);
  return text.replace(at, from.size(), to);
}

// What `workbench run` passes: this host's data shapes and CUDA devices.
wb::ExperimentOptions host_options() {
  wb::ExperimentOptions options;
  options.environment = wb::host_environment();
  return options;
}

wb::Experiment accept(const std::string& text) {
  return wb::parse_experiment(text, "checks.toml", wb_test::plugins(), host_options());
}

wb::ConfigError refusal(const std::string& text,
                        const wb::ExperimentOptions& options = host_options()) {
  try {
    wb::parse_experiment(text, "checks.toml", wb_test::plugins(), options);
  } catch (const wb::ConfigError& e) {
    return e;
  }
  FAIL("the experiment was accepted");
  return wb::ConfigError("", 0, 0, "");
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// kBase with the fixed gate (view i uses expert i) and `experts` experts per MoE layer.
std::string fixed_gate(std::int64_t experts) {
  return replaced(replaced(kBase, "experts = 16", "experts = " + std::to_string(experts)),
                  "plugin = \"noisy_topk\"\nk = 2", "plugin = \"fixed\"");
}

// `text` with a linear probe measuring the paths of the views in `views` (on line 25 after
// fixed_gate(), whose gate table is one line shorter than kBase's).
std::string probing(const std::string& text, const std::string& views) {
  return text + "\n[[base.evaluators]]\nplugin = \"linear_probe\"\nviews = " + views + "\n";
}

// kBase with two MAE losses, the second's mask_ratio on line 27, column 14.
std::string two_masks(const std::string& first, const std::string& second) {
  return replaced(kBase, "plugin = \"moco\"",
                  "plugin = \"mae\"\nmask_ratio = " + first +
                      "\n\n[[base.losses]]\nplugin = \"mae\"\nmask_ratio = " + second);
}

using wbtest::TempDir;

}  // namespace

TEST_CASE("point checks: a valid file passes, with the shapes the backbone declares") {
  const wb::Experiment e = accept(kBase);
  CHECK(e.points.size() == 1);
  // k = 16 of 16 experts is the largest that passes.
  CHECK_NOTHROW(accept(replaced(kBase, "k = 2", "k = 16")));
}

TEST_CASE("point checks: gate.k above the backbone's experts is refused at k's position") {
  const wb::ConfigError e = refusal(replaced(kBase, "k = 2", "k = 17"));
  CHECK(e.file == "checks.toml");
  CHECK(e.line == 19);
  CHECK(e.column == 5);
  CHECK(contains(e.message, "gate.k = 17"));
  CHECK(contains(e.message, "between 1 and the number of experts (16)"));
  CHECK(contains(e.message, "gate 'noisy_topk'"));
}

TEST_CASE("point checks: heads not dividing dim, written or left at the default") {
  const wb::ConfigError written = refusal(replaced(kBase, "heads = 4", "heads = 5"));
  CHECK(written.line == 13);
  CHECK(contains(written.message, "backbone.heads = 5"));
  CHECK(contains(written.message, "dim = 64 is not a multiple of heads = 5"));

  // The default heads = 3 has no line of its own: the backbone's table is named, and the default.
  const wb::ConfigError defaulted = refusal(replaced(kBase, "heads = 4\n", ""));
  CHECK(defaulted.line == 8);
  CHECK(contains(defaulted.message, "backbone.heads = 3 (its default)"));
}

TEST_CASE("point checks: a patch that does not divide the image size") {
  const wb::ConfigError set = refusal(replaced(kBase, "image_size = 28", "image_size = 30"));
  CHECK(set.line == 10);
  CHECK(contains(set.message, "backbone.patch = 4"));
  CHECK(contains(set.message, "image size 30 is not a multiple of patch = 4"));

  // image_size = 0: the native size, read from the IDX header (10 x 10 here).
  TempDir dir("point_checks");
  wbtest::write_raw((dir.path() / "train-images-idx3-ubyte").string(),
                    wbtest::idx_images(2, 10, 10));
  wbtest::write_raw((dir.path() / "train-labels-idx1-ubyte").string(), wbtest::idx_labels({0, 1}));
  const std::string native =
      replaced(replaced(kBase, "image_size = 28", "image_size = 0"), "dataset = \"fashion_mnist\"",
               "dataset = \"idx\"\npath = \"" + dir.path().string() + "\"");
  const wb::ConfigError e = refusal(native);
  CHECK(contains(e.message, "image size 10 is not a multiple of patch = 4"));
  CHECK_NOTHROW(accept(replaced(native, "patch = 4", "patch = 5")));
  // digits are 8 px by definition: nothing is read.
  const std::string digits = replaced(replaced(kBase, "image_size = 28", "image_size = 0"),
                                      "dataset = \"fashion_mnist\"", "dataset = \"digits\"");
  CHECK(contains(refusal(replaced(digits, "patch = 4", "patch = 3")).message,
                 "image size 8 is not a multiple of patch = 3"));
  CHECK_NOTHROW(accept(digits));
  // Without the files the native size is not known: the check is left to the point's start.
  fs::remove_all(dir.path());
  CHECK_NOTHROW(accept(native));
}

TEST_CASE("point checks: MAE's decoder heads must divide its width") {
  std::string mae =
      replaced(kBase, "plugin = \"moco\"", "plugin = \"mae\"\ndecoder_dim = 64\ndecoder_heads = 5");
  const wb::ConfigError e = refusal(mae);
  CHECK(e.line == 24);
  CHECK(contains(e.message, "losses.mae.decoder_heads = 5"));
  CHECK(contains(e.message, "decoder_dim = 64 is not a multiple of decoder_heads = 5"));
  CHECK(contains(e.message, "loss 'mae'"));
  CHECK_NOTHROW(accept(replaced(mae, "decoder_heads = 5", "decoder_heads = 4")));
}

TEST_CASE("point checks: the fixed gate needs an expert for every view the losses ask for") {
  // moco asks for two views: two experts serve them, one does not.
  CHECK_NOTHROW(accept(fixed_gate(2)));
  const wb::ConfigError e = refusal(fixed_gate(1));
  CHECK(e.line == 17);  // the gate's table: the gate has no key of its own
  CHECK(contains(e.message, "the losses ask for 2 views per image"));
  CHECK(contains(e.message, "MoE layers have 1 expert (view i uses expert i)"));
  CHECK(contains(e.message, "gate 'fixed'"));
  // mae asks for one view: one expert serves it.
  CHECK_NOTHROW(accept(replaced(fixed_gate(1), "plugin = \"moco\"", "plugin = \"mae\"")));
}

TEST_CASE("point checks: with the fixed gate, an evaluator's views need an expert each") {
  const wb::ConfigError e = refusal(probing(fixed_gate(2), "[0, 2]"));
  CHECK(e.line == 25);
  CHECK(e.column == 9);
  CHECK(contains(e.message, "evaluators.linear_probe.views = [0, 2]"));
  CHECK(contains(e.message, "view 2 has no route: gate 'fixed' routes views 0 to 1"));
  CHECK(contains(e.message, "evaluator 'linear_probe'"));
  CHECK_NOTHROW(accept(probing(fixed_gate(2), "[0, 1]")));
  // knn and semi_supervised have the same parameter and check.
  for (const std::string name : {"knn", "semi_supervised"}) {
    CAPTURE(name);
    const std::string text = replaced(probing(fixed_gate(2), "[1, 3]"), "linear_probe", name);
    CHECK(contains(refusal(text).message, "evaluators." + name + ".views = [1, 3]: view 3"));
  }
  // A learned gate routes any claimed view index.
  CHECK_NOTHROW(accept(probing(kBase, "[0, 2]")));
}

TEST_CASE("point checks: two losses asking different mask ratios, at the second's mask_ratio") {
  const wb::ConfigError e = refusal(two_masks("0.5", "0.75"));
  CHECK(e.line == 27);
  CHECK(e.column == 14);
  CHECK(contains(e.message, "losses.1.mask_ratio = 0.75"));
  CHECK(contains(e.message, "different mask ratios (0.5 and 0.75)"));
  CHECK(contains(e.message, "loss 'mae'"));
  // Left at its default (0.75): the second loss's table, and the default, are named.
  const wb::ConfigError defaulted =
      refusal(replaced(two_masks("0.5", "0.75"), "mask_ratio = 0.75\n", ""));
  CHECK(defaulted.line == 25);
  CHECK(contains(defaulted.message, "losses.1.mask_ratio = 0.75 (its default)"));
  // One ratio for both, or a loss without a mask beside one with: accepted.
  CHECK_NOTHROW(accept(two_masks("0.6", "0.6")));
  CHECK_NOTHROW(accept(replaced(two_masks("0.5", "0.75"), "plugin = \"mae\"\nmask_ratio = 0.75",
                                "plugin = \"moco\"")));
}

TEST_CASE("point checks: every loss's check declares the views and mask its built loss requires") {
  // The host sees the losses' requirements only through their checks (ValidationReport::needs):
  // for the in-tree losses they must be what Loss::requirements() returns once built.
  wb::Registry& registry = wb_test::plugins();
  wb::LossContext c = crmoe_test::loss_context(registry, 7, 64);
  c.classes = 10;
  c.channels = 1;
  c.image_size = 28;
  c.moe_layers = 1;
  c.experts = 4;
  wb::ValidationContext shapes;
  shapes.image_size = 28;
  shapes.channels = 1;
  shapes.classes = 10;
  shapes.feature_dim = 64;
  shapes.patch_grid = 7;
  shapes.experts = 4;
  shapes.moe_layers = 1;
  const std::vector<std::string> names = registry.names(wb::Kind::Loss);
  CHECK(names.size() >= 7);
  for (const std::string& name : names) {
    CAPTURE(name);
    wb::Params p = registry.defaults(wb::Kind::Loss, name);
    if (name == "mae") p.set("mask_ratio", 0.6);  // not the default: the value is passed on
    if (name == "ogar")  // defaults() leaves a plugin parameter's own parameters unset
      p.set("matcher", std::shared_ptr<const wb::PluginRef>(crmoe_test::plugin_ref(
                           "overlap", registry.defaults(wb::Kind::Matcher, "overlap"))));
    const wb::LossRequirements built = registry.make_loss(name, p, c)->requirements();
    const wb::ValidationReport declared = registry.check(wb::Kind::Loss, name, p, shapes);
    CHECK(declared.ok());
    CHECK(declared.needs.views == built.views);
    CHECK(declared.needs.mask_ratio == built.mask_ratio);
  }
}

TEST_CASE("point checks: the position is where the value came from: grid, [[point]], --set") {
  const wb::ConfigError grid = refusal(kBase + "\n[grid]\n\"gate.k\" = [2, 17]\n");
  CHECK(grid.line == 25);
  CHECK(grid.column == 16);
  CHECK(contains(grid.message, "gate.k = 17"));
  CHECK(contains(grid.message, "(in point gate.k=17 seed=0)"));

  const wb::ConfigError point = refusal(kBase +
                                        "\n[[point]]\n\"backbone.experts\" = 4\n"
                                        "\"gate.k\" = 8\n");
  CHECK(point.line == 26);
  CHECK(contains(point.message, "number of experts (4)"));

  wb::ExperimentOptions set = host_options();
  set.overrides = {"backbone.experts=1"};
  const wb::ConfigError e = refusal(kBase, set);
  // k = 2 is in the file; the expert count it exceeds came from --set.
  CHECK(e.line == 19);
  CHECK(contains(e.message, "number of experts (1)"));
  set.overrides = {"gate.k=40"};
  const wb::ConfigError from_set = refusal(kBase, set);
  CHECK(from_set.file == "--set gate.k=40");
  CHECK(from_set.line == 0);
}

TEST_CASE("point checks: an error inside an unused profile names the profile") {
  const std::string text = kBase + "\n[profile.big]\n\"gate.k\" = 17\n";
  const wb::ConfigError e = refusal(text);
  CHECK(e.line == 25);
  CHECK(contains(e.message, "gate.k = 17"));
  CHECK(contains(e.message, "with [profile.big] applied"));
  wb::ExperimentOptions used = host_options();
  used.profile = "big";
  CHECK(contains(refusal(text, used).message, "gate.k = 17"));
}

TEST_CASE("point checks: device = \"cuda\" is refused on a host without a CUDA device") {
  const std::string text =
      replaced(kBase, "[base.data]", "[base]\ndevice = \"cuda\"\n\n[base.data]");
  if (at::hasCUDA()) {
    CHECK_NOTHROW(accept(text));
  } else {
    const wb::ConfigError e = refusal(text);
    CHECK(e.line == 5);
    CHECK(contains(e.message, "no CUDA device"));
    // run --prepare writes points for other hosts: their GPUs are not this host's.
    wb::ExperimentOptions prepare = host_options();
    prepare.environment.has_cuda = nullptr;
    CHECK_NOTHROW(wb::parse_experiment(text, "checks.toml", wb_test::plugins(), prepare));
  }
}

TEST_CASE("point checks: the cluster gate needs a clustering, routing_gallery an existing layer") {
  const wb::ConfigError cluster =
      refusal(replaced(kBase, "plugin = \"noisy_topk\"\nk = 2", "plugin = \"cluster\""));
  CHECK(cluster.line == 17);
  CHECK(contains(cluster.message, "data.clusters"));

  const std::string gallery = kBase + "\n[[base.evaluators]]\nplugin = \"routing_gallery\"\n";
  CHECK_NOTHROW(accept(gallery));
  // depth 2, moe_every 2: one MoE layer, so layer 1 does not exist (-1 is the last).
  const wb::ConfigError layer = refusal(gallery + "layer = 1\n");
  CHECK(layer.line == 26);
  CHECK(contains(layer.message, "evaluators.routing_gallery.layer = 1"));
  CHECK(contains(layer.message, "the backbone has 1 MoE layers"));
  const wb::ConfigError dense =
      refusal(replaced(replaced(gallery, "experts = 16\nmoe_every = 2\n", ""),
                       "[base.gate]\nplugin = \"noisy_topk\"\nk = 2\n", ""));
  CHECK(contains(dense.message, "no MoE layer"));
}

TEST_CASE("point checks: a MoE backbone without a gate is refused before it runs") {
  const wb::ConfigError e =
      refusal(replaced(kBase, "[base.gate]\nplugin = \"noisy_topk\"\nk = 2\n", ""));
  CHECK(e.line == 14);
  CHECK(contains(e.message, "backbone.experts = 16"));
  CHECK(contains(e.message, "needs a gate"));
}

TEST_CASE("point checks: plugins without checks pass, a library checks only its own entries") {
  wb::Registry r;
  r.add_gate("plain", "no checks", {},
             [](const wb::Params&, const wb::GateShape&) { return std::shared_ptr<wb::Gate>(); });
  CHECK(r.check(wb::Kind::Gate, "plain", wb::Params(), wb::ValidationContext()).ok());
  CHECK_THROWS_AS(r.add_check(wb::Kind::Gate, "other", {}), std::runtime_error);
  r.add_check(wb::Kind::Gate, "plain",
              [](const wb::Params&, const wb::ValidationContext& c, wb::ValidationReport& rep) {
                if (c.experts > 3) rep.error("k", "too many");
              });
  wb::ValidationContext four;
  four.experts = 4;
  const wb::ValidationReport report = r.check(wb::Kind::Gate, "plain", wb::Params(), four);
  REQUIRE(report.errors.size() == 1);
  CHECK(report.errors[0].key == "k");
  CHECK(r.check(wb::Kind::Gate, "plain", wb::Params(), wb::ValidationContext()).ok());
}

namespace {

// `workbench run FILE --runs-dir RUNS` + `mode` on `text` written to FILE in `dir`: the exit code
// and the output.
std::pair<int, std::string> run_file(const TempDir& dir, const std::string& text,
                                     const std::string& mode = " --dry-run") {
  const fs::path file = dir.path() / "checks.toml";
  std::ofstream(file, std::ios::trunc) << text;
  const fs::path runs = dir.path() / "runs";
  return wbtest::run_shell(
      wbtest::workbench_command("run " + file.string() + " --runs-dir " + runs.string()) + mode,
      dir.path());
}

}  // namespace

TEST_CASE("point checks: workbench run --dry-run refuses an impossible point and trains nothing") {
  TempDir dir("point_checks");
  const std::string file = (dir.path() / "checks.toml").string();
  for (const std::string& mode : {std::string(" --dry-run"), std::string()}) {
    CAPTURE(mode);
    const auto [code, text] = run_file(dir, replaced(kBase, "k = 2", "k = 17"), mode);
    CHECK(code == 2);
    CHECK(contains(text, file + ":19:5: gate.k = 17"));
    CHECK_FALSE(fs::exists(dir.path() / "runs"));  // no point directory, no training
  }
  CHECK(run_file(dir, kBase).first == 0);
}

TEST_CASE("point checks: --dry-run names the fixed gate, an unrouted view, a second mask ratio") {
  TempDir dir("point_checks");
  const std::string file = (dir.path() / "checks.toml").string();
  const std::pair<std::string, std::string> refused[] = {
      {fixed_gate(1), ":17:1: gate: the losses ask for 2 views per image"},
      {probing(fixed_gate(2), "[0, 2]"), ":25:9: evaluators.linear_probe.views = [0, 2]"},
      {two_masks("0.5", "0.75"), ":27:14: losses.1.mask_ratio = 0.75"}};
  for (const auto& [text, where] : refused) {
    CAPTURE(where);
    const auto [code, output] = run_file(dir, text);
    CHECK(code == 2);
    CHECK(contains(output, file + where));
  }
  for (const std::string& text : {probing(fixed_gate(2), "[0, 1]"), two_masks("0.6", "0.6")})
    CHECK(run_file(dir, text).first == 0);
  CHECK_FALSE(fs::exists(dir.path() / "runs"));
}
