// Experiment files: grids, zips, explicit points, excludes, seeds, profiles, --set, addressing,
// and the --dry-run table.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <tuple>

#include "config/experiment.h"
#include "fixture_config.h"

namespace {

using namespace wb::test;  // FakePlugins, Caught, config_error, contains, position

struct Fixture : FakePlugins {
  wb::Experiment parse(const std::string& text, const wb::ExperimentOptions& options = {}) {
    return wb::parse_experiment(text, "exp.toml", registry, options);
  }
};

const std::string kBase = R"(
[experiment]
name = "sweep"

[base]
backbone = { plugin = "vit", dim = 32 }
gate = { plugin = "noisy_topk", k = 2 }
losses = [{ plugin = "moco" }, { plugin = "ogar", matcher = "overlap" }]
[base.train]
epochs = 5
batch = 128
)";

}  // namespace

TEST_CASE("a 2 x 3 grid with 3 seeds gives 18 points, each combination exactly once") {
  Fixture f;
  const std::string text = R"(
[experiment]
name = "sweep"
seeds = [0, 1, 2]
)" + kBase.substr(kBase.find("[base]")) +
                           R"(
[grid]
train.batch = [64, 256]
"backbone.dim" = [8, 16, 24]
)";
  wb::Experiment e = f.parse(text);
  CHECK(e.name == "sweep");
  REQUIRE(e.points.size() == 18);
  CHECK(e.grid_points == 6);
  CHECK(e.seeds == std::vector<std::int64_t>{0, 1, 2});
  std::set<std::tuple<std::int64_t, std::int64_t, std::int64_t>> seen;
  std::set<std::string> ids;
  for (const auto& p : e.points) {
    std::int64_t batch = p.config.train.integer("batch");
    std::int64_t dim = p.config.backbone.params.integer("dim");
    CHECK(p.config.run.integer("seed") == p.seed);
    CHECK(seen.insert({batch, dim, p.seed}).second);
    ids.insert(p.id);
    CHECK(p.id == p.config.id);
    // The rest of the base is untouched.
    CHECK(p.config.train.real("epochs") == 5.0);
    CHECK(p.config.gate.params.integer("k") == 2);
    REQUIRE(p.assignments.size() == 2);
    CHECK(p.assignments[0].first == "train.batch");
    CHECK(p.assignments[1].first == "backbone.dim");
    CHECK(p.label == "train.batch=" + std::to_string(batch) + " backbone.dim=" +
                         std::to_string(dim) + " seed=" + std::to_string(p.seed));
  }
  CHECK(seen.size() == 18);
  for (std::int64_t b : {64, 256})
    for (std::int64_t d : {8, 16, 24})
      for (std::int64_t s : {0, 1, 2}) CHECK(seen.count({b, d, s}) == 1);
  CHECK(ids.size() == 18);
  CHECK(e.varied == std::vector<std::string>{"train.batch", "backbone.dim"});
  // Seeds outermost, then the grid in file order with the first key slowest.
  CHECK(e.points[0].seed == 0);
  CHECK(e.points[5].seed == 0);
  CHECK(e.points[6].seed == 1);
  CHECK(e.points[0].config.train.integer("batch") == 64);
  CHECK(e.points[1].config.backbone.params.integer("dim") == 16);
  CHECK(e.points[3].config.train.integer("batch") == 256);
}

TEST_CASE("zip lists advance together, unequal lengths name both keys") {
  Fixture f;
  const std::string text = kBase + R"(
[grid]
backbone.dim = [8, 16]
[zip.schedule]
train.epochs = [1, 2, 4]
train.warmup_epochs = [0.0, 0.5, 1.5]
)";
  wb::Experiment e = f.parse(text);
  REQUIRE(e.points.size() == 6);
  std::map<double, double> warmup_of;
  for (const auto& p : e.points) {
    double epochs = p.config.train.real("epochs");
    double warmup = p.config.train.real("warmup_epochs");
    CHECK(warmup_of.emplace(epochs * 10 + p.config.backbone.params.integer("dim"), warmup).second);
    CHECK(warmup == (epochs == 1 ? 0.0 : epochs == 2 ? 0.5 : 1.5));
  }
  CHECK(e.varied ==
        std::vector<std::string>{"backbone.dim", "train.epochs", "train.warmup_epochs"});

  const std::string bad = kBase + R"(
[zip.schedule]
train.epochs = [1, 2, 4]
train.warmup_epochs = [0.0, 0.5]
)";
  Caught err = config_error([&] { f.parse(bad); });
  CHECK(std::make_pair(err.line, err.column) == position(bad, "[0.0, 0.5]"));
  CHECK(contains(err.message,
                 "[zip.schedule]: 'train.warmup_epochs' has 2 values but "
                 "'train.epochs' has 3"));

  const std::string twice = kBase + R"(
[grid]
train.epochs = [1, 2]
[zip.z]
train.epochs = [1, 2]
train.batch = [8, 16]
)";
  err = config_error([&] { f.parse(twice); });
  CHECK(contains(err.message, "'train.epochs' is varied twice: in [grid] and in [zip.z]"));
}

TEST_CASE("[[exclude]] drops matching points, [[point]] adds points, duplicates are dropped") {
  Fixture f;
  const std::string text = R"(
[experiment]
name = "ex"
seeds = [1, 2]
)" + kBase.substr(kBase.find("[base]")) +
                           R"(
[grid]
train.batch = [64, 128]
backbone.dim = [8, 16]

[[exclude]]
train.batch = 64
backbone.dim = 16

[[exclude]]
seed = 2
train.batch = 128
backbone.dim = 8

[[point]]
backbone = { plugin = "mlp", hidden = 7 }
gate.k = 1
)";
  wb::Experiment e = f.parse(text);
  // (4 grid + 1 explicit) x 2 seeds = 10, minus 2 (first exclude) and 1 (second).
  CHECK(e.grid_points == 4);
  CHECK(e.explicit_points == 1);
  CHECK(e.excluded == 3);
  REQUIRE(e.points.size() == 7);
  int explicit_points = 0;
  for (const auto& p : e.points) {
    if (p.config.backbone.plugin == "mlp") {
      ++explicit_points;
      CHECK(p.config.backbone.params.integer("hidden") == 7);
      CHECK(p.config.gate.params.integer("k") == 1);
      CHECK(p.config.train.integer("batch") == 128);  // the base value
      continue;
    }
    std::int64_t batch = p.config.train.integer("batch");
    std::int64_t dim = p.config.backbone.params.integer("dim");
    CHECK_FALSE((batch == 64 && dim == 16));
    CHECK_FALSE((p.seed == 2 && batch == 128 && dim == 8));
  }
  CHECK(explicit_points == 2);
  CHECK(contains(wb::format_points_table(e),
                 "7 points ((4 grid + 1 explicit) x 2 seeds), 3 excluded"));

  // A key left at its default matches its default value.
  wb::Experiment by_default = f.parse(kBase + R"(
[grid]
backbone.depth = [6, 7]
train.batch = [64, 128]
[[exclude]]
backbone.depth = 6
train.lr_scaling = "linear"
train.batch = 64
)");
  REQUIRE(by_default.points.size() == 3);
  CHECK(by_default.excluded == 1);
  for (const auto& p : by_default.points)
    CHECK_FALSE(
        (p.config.backbone.params.integer("depth") == 6 && p.config.train.integer("batch") == 64));

  // Excluded points are not validated: excludes can remove invalid combinations.
  wb::Experiment invalid_removed = f.parse(kBase + R"(
[grid]
gate = ["fixed", "noisy_topk"]
"gate.k" = [1, 2]  # quoted: TOML forbids gate = [...] next to gate.k = ...
[[exclude]]
gate.plugin = "fixed"
)");
  CHECK(invalid_removed.points.size() == 2);

  // A key no point has is a typo, not a filter.
  const std::string typo = kBase + "\n[[exclude]]\ntrain.bach = 64\n";
  Caught err = config_error([&] { f.parse(typo); });
  CHECK(std::make_pair(err.line, err.column) == position(typo, "train.bach"));
  CHECK(contains(err.message, "[[exclude]] key 'train.bach' is not a key of any point"));

  // The same configuration twice is run once.
  wb::Experiment dup = f.parse(kBase + "\n[grid]\ntrain.batch = [64, 64, 32]\n");
  CHECK(dup.points.size() == 2);
  CHECK(dup.duplicates == 1);
}

TEST_CASE("seeds: [experiment].seeds, else the base seed, else 0") {
  Fixture f;
  wb::Experiment e = f.parse(kBase);
  REQUIRE(e.points.size() == 1);
  CHECK(e.points[0].seed == 0);
  CHECK(e.varied.empty());
  CHECK(e.points[0].label == "seed=0");

  wb::ExperimentOptions o;
  o.overrides = {"seed=7"};
  e = f.parse(kBase, o);
  REQUIRE(e.points.size() == 1);
  CHECK(e.points[0].seed == 7);
  CHECK(e.points[0].config.run.integer("seed") == 7);

  const std::string seeded =
      "[experiment]\nname = \"s\"\nseeds = [3, 5]\n" + kBase.substr(kBase.find("[base]"));
  e = f.parse(seeded);
  REQUIRE(e.points.size() == 2);
  CHECK(e.points[0].seed == 3);
  CHECK(e.points[1].seed == 5);
  CHECK(e.points[0].id != e.points[1].id);

  Caught err = config_error([&] { f.parse(kBase + "\n[grid]\nseed = [1, 2]\n"); });
  CHECK(contains(err.message, "seeds come from [experiment].seeds"));
  err = config_error([&] {
    f.parse("[experiment]\nname = \"s\"\nseeds = [1, 1]\n" + kBase.substr(kBase.find("[base]")));
  });
  CHECK(contains(err.message, "lists 1 twice"));
  CHECK(err.line == 3);
}

TEST_CASE("profiles, then --set, then the grid: each later one wins") {
  Fixture f;
  const std::string text = kBase + R"(
[profile.fast]
train.epochs = 1
train.batch = 32
[profile.fast.data]
train_limit = 100
)";
  wb::Experiment e = f.parse(text);
  CHECK(e.points[0].config.train.real("epochs") == 5.0);

  wb::ExperimentOptions o;
  o.profile = "fast";
  e = f.parse(text, o);
  CHECK(e.points[0].config.train.real("epochs") == 1.0);
  CHECK(e.points[0].config.train.integer("batch") == 32);
  CHECK(e.points[0].config.data.integer("train_limit") == 100);

  o.overrides = {"train.batch=16", "data.path=/data/x y", "train.betas=[0.5, 0.6]"};
  e = f.parse(text, o);
  CHECK(e.points[0].config.train.integer("batch") == 16);
  CHECK(e.points[0].config.train.real("epochs") == 1.0);
  CHECK(e.points[0].config.data.text("path") == "/data/x y");  // bare words are strings
  CHECK(e.points[0].config.train.reals("betas") == std::vector<double>{0.5, 0.6});

  e = f.parse(text + "\n[grid]\ntrain.batch = [8, 4]\n", o);
  REQUIRE(e.points.size() == 2);
  CHECK(e.points[0].config.train.integer("batch") == 8);
  CHECK(e.points[1].config.train.integer("batch") == 4);

  o = {};
  o.profile = "slow";
  Caught err = config_error([&] { f.parse(text, o); });
  CHECK(err.file == "--profile slow");
  CHECK(err.line == 0);
  CHECK(contains(err.what, "--profile slow: unknown profile 'slow'"));
  CHECK(contains(err.message, "(profiles: fast)"));
}

TEST_CASE("--set replaces tables with inline tables and names itself in errors") {
  Fixture f;
  wb::ExperimentOptions o;
  // Setting only gate.plugin would keep k, which the fixed gate does not take.
  o.overrides = {"gate.plugin=fixed"};
  Caught err = config_error([&] { f.parse(kBase, o); });
  CHECK(contains(err.message, "unknown key 'k' in gate (gate 'fixed')"));

  o.overrides = {"gate={plugin=\"fixed\"}"};
  wb::Experiment e = f.parse(kBase, o);
  CHECK(e.points[0].config.gate.plugin == "fixed");
  CHECK(e.points[0].config.gate.params.values().empty());

  o.overrides = {"train.batch=0"};
  err = config_error([&] { f.parse(kBase, o); });
  CHECK(err.file == "--set train.batch=0");
  CHECK(err.line == 0);
  CHECK(contains(err.what, "--set train.batch=0: train.batch = 0 is out of range"));

  o.overrides = {"train.bacth=3"};
  err = config_error([&] { f.parse(kBase, o); });
  CHECK(err.file == "--set train.bacth=3");
  CHECK(contains(err.message, "did you mean 'batch'?"));

  o.overrides = {"no_equals_sign"};
  err = config_error([&] { f.parse(kBase, o); });
  CHECK(contains(err.message, "expected --set key=value"));

  // Text that opens a table, an array or a quoted string but is not valid TOML is refused,
  // not taken as a string (which would surface later as a confusing type error, or not at all
  // for a string-valued key).
  for (const std::string bad : {"gate={plugin=\"fixed\"", "train.betas=[0.5, 0.6",
                                "data.path=\"/data/x", "gate={plugin=fixed}"}) {
    CAPTURE(bad);
    o.overrides = {bad};
    err = config_error([&] { f.parse(kBase, o); });
    CHECK(err.file == "--set " + bad);
    CHECK(contains(err.message, "malformed "));
  }
  o.overrides = {"data.path=/data/{x}"};  // a bare word with braces inside stays a string
  CHECK(f.parse(kBase, o).points[0].config.data.text("path") == "/data/{x}");
}

TEST_CASE("dotted addressing: by plugin name, by index, nested plugins, ambiguity") {
  Fixture f;
  wb::ExperimentOptions o;
  o.overrides = {"losses.ogar.alpha=0.7", "losses.0.weight=2", "losses.ogar.matcher.lambda=0.4"};
  wb::Experiment e = f.parse(kBase, o);
  const wb::RunConfig& c = e.points[0].config;
  CHECK(c.losses[1].params.real("alpha") == 0.7);
  CHECK(c.losses[0].params.real("weight") == 2.0);
  // The matcher was given as a plain name in [base]; it was expanded to a table first.
  CHECK(c.losses[1].params.plugin("matcher").name == "overlap");
  CHECK(c.losses[1].params.plugin("matcher").params.real("lambda") == 0.4);

  o.overrides = {"losses.ogar.matcher=fsm"};
  e = f.parse(kBase, o);
  CHECK(e.points[0].config.losses[1].params.plugin("matcher").name == "fsm");

  const std::string two = R"(
[experiment]
name = "two"
[base]
backbone = "vit"
losses = [{ plugin = "ogar" }, { plugin = "ogar", alpha = 0.1 }]
)";
  o.overrides = {"losses.ogar.alpha=0.2"};
  Caught err = config_error([&] { f.parse(two, o); });
  CHECK(contains(err.message, "'losses.ogar.alpha' is ambiguous"));
  CHECK(contains(err.message, "'losses.0.alpha' or 'losses.1.alpha'"));
  o.overrides = {"losses.1.alpha=0.2"};
  CHECK(f.parse(two, o).points[0].config.losses[1].params.real("alpha") == 0.2);

  o.overrides = {"losses.moco.tau=0.2"};
  err = config_error([&] { f.parse(two, o); });
  CHECK(contains(err.message,
                 "no element of 'losses' uses plugin 'moco' (plugins there: ogar, ogar)"));
  o.overrides = {"losses.5.tau=0.2"};
  err = config_error([&] { f.parse(two, o); });
  CHECK(contains(err.message, "index 5 is out of range"));
}

TEST_CASE("an invalid grid value is reported at its position, with the point") {
  Fixture f;
  const std::string text = kBase + "\n[grid]\nlosses.ogar.alpha = [0.5, 1.5]\n";
  Caught err = config_error([&] { f.parse(text); });
  CHECK(std::make_pair(err.line, err.column) == position(text, "1.5"));
  CHECK(contains(err.message, "losses.ogar.alpha = 1.5 is out of range"));
  CHECK(contains(err.message, "(in point losses.ogar.alpha=1.5 seed=0)"));

  const std::string unknown = kBase + "\n[grid]\ntrain.epochz = [1, 2]\n";
  err = config_error([&] { f.parse(unknown); });
  CHECK(std::make_pair(err.line, err.column) == position(unknown, "1, 2"));
  CHECK(contains(err.message, "did you mean 'epochs'?"));

  const std::string not_list = kBase + "\n[grid]\ntrain.epochs = 3\n";
  err = config_error([&] { f.parse(not_list); });
  CHECK(contains(err.message, "expected a non-empty list of values"));
}

TEST_CASE("experiment file structure: name, sections, syntax") {
  Fixture f;
  const std::string base = kBase.substr(kBase.find("[base]"));
  Caught err = config_error([&] { f.parse(base); });
  CHECK(contains(err.message, "[experiment] needs a name"));
  err = config_error([&] { f.parse("[experiment]\nname = \"../up\"\n" + base); });
  CHECK(contains(err.message, "is not a safe folder name"));
  CHECK(err.line == 2);
  const std::string typo = kBase + "\n[grids]\ntrain.batch = [1]\n";
  err = config_error([&] { f.parse(typo); });
  CHECK(std::make_pair(err.line, err.column) == position(typo, "grids"));
  CHECK(contains(err.message, "unknown section 'grids'; did you mean 'grid'?"));
  err = config_error([&] { f.parse(kBase + "\n[grid\n"); });
  CHECK(contains(err.message, "TOML syntax error"));
  CHECK(err.line == position(kBase + "\n[grid\n", "[grid").first);
}

TEST_CASE("load_experiment reads the file, format_points_table aligns the varied keys") {
  Fixture f;
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "wb_test_grid";
  std::filesystem::create_directories(dir);
  const std::string text = kBase + R"(
[grid]
train.batch = [64, 1024]
gate = ["fixed", { plugin = "noisy_topk", k = 1 }]
)";
  { std::ofstream(dir / "exp.toml") << text; }
  wb::Experiment e = wb::load_experiment((dir / "exp.toml").string(), f.registry);
  CHECK(e.file == (dir / "exp.toml").string());
  CHECK(e.source == text);
  REQUIRE(e.points.size() == 4);
  CHECK(e.varied == std::vector<std::string>{"train.batch", "gate"});

  const std::string table = wb::format_points_table(e);
  std::vector<std::string> lines;
  for (std::size_t start = 0, nl; (nl = table.find('\n', start)) != std::string::npos;
       start = nl + 1)
    lines.push_back(table.substr(start, nl - start));
  REQUIRE(lines.size() == 6);
  CHECK(lines[0].rfind("id", 0) == 0);
  // Every column starts at the same offset in every row.
  const std::size_t seed_col = lines[0].find("seed"), batch_col = lines[0].find("train.batch"),
                    gate_col = lines[0].find("gate");
  for (std::size_t r = 1; r <= 4; ++r) {
    const wb::Point& p = e.points[r - 1];
    CHECK(lines[r].rfind(p.id, 0) == 0);
    CHECK(lines[r].substr(seed_col, 1) == "0");
    CHECK(lines[r].substr(batch_col, std::to_string(p.config.train.integer("batch")).size()) ==
          std::to_string(p.config.train.integer("batch")));
    CHECK(lines[r][gate_col - 1] == ' ');
    CHECK(lines[r][gate_col] != ' ');
  }
  CHECK(contains(lines[1], "fixed"));
  CHECK(contains(lines[2], "{ plugin = \"noisy_topk\", k = 1, noise_std = 1.0 }"));
  CHECK(lines[5] == "4 points (4 grid x 1 seed), 0 excluded");

  Caught err = config_error([&] {
    std::ofstream(dir / "bad.toml") << kBase << "[base.views]\nrecipe = \"mocov3\"\n";
    wb::load_experiment((dir / "bad.toml").string(), f.registry);
  });
  CHECK(err.file == (dir / "bad.toml").string());
  CHECK(contains(err.message, "views.recipe = \"mocov3\" is not allowed"));
  err = config_error([&] { wb::load_experiment((dir / "none.toml").string(), f.registry); });
  CHECK(contains(err.message, "cannot read"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("an experiment with more points than the limit is refused before it is expanded") {
  Fixture f;
  auto list = [](int n) {
    std::string out = "[";
    for (int i = 0; i < n; ++i) out += (i ? ", " : "") + std::to_string(i + 1);
    return out + "]";
  };
  // 1000 x 1000 x 1000 = 10^9 points: expanding them would take hundreds of GB.
  const std::string huge = kBase + "\n[grid]\ntrain.batch = " + list(1000) +
                           "\ntrain.epochs = " + list(1000) +
                           "\ntrain.warmup_epochs = " + list(1000) + "\n";
  Caught err = config_error([&] { f.parse(huge); });
  CHECK(std::make_pair(err.line, err.column) == position(huge, "train.batch = "));
  CHECK(contains(err.message,
                 "the experiment defines 1e+09 points (grid 1000 (train.batch) x "
                 "1000 (train.epochs) x 1000 (train.warmup_epochs), 0 [[point]], x "
                 "1 seeds), more than the 100000 a run may have"));
  // Just past the limit, with seeds counted: 50 x 1001 x 2 seeds = 100100.
  const std::string past =
      "[experiment]\nname = \"sweep\"\nseeds = [0, 1]\n" + kBase.substr(kBase.find("[base]")) +
      "\n[grid]\ntrain.batch = " + list(50) + "\ntrain.epochs = " + list(1001) + "\n";
  err = config_error([&] { f.parse(past); });
  CHECK(contains(err.message, "defines 1.001e+05 points"));
  CHECK(contains(err.message, "x 2 seeds"));
}

TEST_CASE("every [profile.*] is checked, used or not, and an error names the profile") {
  Fixture f;
  const std::string good = kBase + R"(
[profile.paper]
"train.batch" = 4096
)";
  CHECK(f.parse(good).points.size() == 1);

  const std::string typo = kBase + R"(
[profile.paper]
"train.batch" = 4096
[profile.fast]
train.epochz = 1
)";
  Caught err = config_error([&] { f.parse(typo); });
  CHECK(std::make_pair(err.line, err.column) == position(typo, "train.epochz"));
  CHECK(contains(err.message, "unknown key 'epochz' in train; did you mean 'epochs'?"));
  CHECK(contains(err.message, "(with [profile.fast] applied: every profile is checked"));

  const std::string impossible = kBase + R"(
[profile.big]
"train.batch" = 0
)";
  err = config_error([&] { f.parse(impossible); });
  CHECK(std::make_pair(err.line, err.column) == position(impossible, "0\n"));
  CHECK(contains(err.message, "train.batch = 0 is out of range"));
  CHECK(contains(err.message, "[profile.big]"));
  // Using the profile reports the same error, without the note about unused profiles.
  wb::ExperimentOptions o;
  o.profile = "big";
  err = config_error([&] { f.parse(impossible, o); });
  CHECK(contains(err.message, "train.batch = 0 is out of range"));
  CHECK_FALSE(contains(err.message, "every profile is checked"));
}
