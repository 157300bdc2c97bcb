// The experiment files shipped in experiments/: each expands and validates against the real
// plugins, at its own scale and under --profile paper; Table 2's sep-ViT is one trained point
// whose experts are full size at both scales and whose evaluators measure both expert paths.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "built_plugins.h"
#include "config/experiment.h"
#include "run/host_environment.h"

namespace fs = std::filesystem;

namespace {

const fs::path kExperiments = fs::path(WB_SOURCE_DIR) / "experiments";

bool has_paper_profile(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  return text.str().find("[profile.paper]") != std::string::npos;
}

const wb::PluginConfig* evaluator(const wb::RunConfig& c, const std::string& plugin) {
  for (const auto& e : c.evaluators)
    if (e.plugin == plugin) return &e;
  return nullptr;
}

}  // namespace

// load_experiment also expands each file under every [profile.*] and runs every point's checks
// (config/point_checks.h): what `workbench run FILE --dry-run` does.
TEST_CASE("experiment files: every shipped file validates, also under --profile paper") {
  std::size_t files = 0;
  std::vector<fs::directory_entry> entries;
  for (const auto& dir : {kExperiments, kExperiments / "fig3"})
    for (const auto& entry : fs::directory_iterator(dir)) entries.push_back(entry);
  for (const auto& entry : entries) {
    if (entry.path().extension() != ".toml") continue;
    CAPTURE(entry.path().filename().string());
    ++files;
    wb::ExperimentOptions options;  // as `workbench run` checks: this host's data and devices
    options.environment = wb::host_environment();
    const wb::Experiment e =
        wb::load_experiment(entry.path().string(), wb_test::plugins(), options);
    CHECK(!e.points.empty());
    if (has_paper_profile(entry.path())) {
      wb::ExperimentOptions paper = options;
      paper.profile = "paper";
      CHECK(!wb::load_experiment(entry.path().string(), wb_test::plugins(), paper).points.empty());
    }
  }
  CHECK(files >= 18);
}

TEST_CASE("experiment files: Table 2's sep-ViT is trained once, full-size experts, both paths") {
  for (const std::string profile : {"", "paper"}) {
    CAPTURE(profile);
    wb::ExperimentOptions options;
    options.profile = profile;
    const wb::Experiment e = wb::load_experiment(
        (kExperiments / "table2_naive_vs_crmoe.toml").string(), wb_test::plugins(), options);
    std::size_t sep = 0;
    for (const auto& p : e.points) {
      if (p.config.gate.plugin != "fixed") continue;
      ++sep;
      const wb::Params& b = p.config.backbone.params;
      CHECK(b.integer("experts") == 2);
      // Hidden width 4 x dim: the dense MLP's, at 64 and at 384 alike.
      CHECK(b.real("expert_ratio") == 4.0);
      CHECK(b.integer("dim") == (profile.empty() ? 64 : 384));
      for (const char* name : {"knn", "linear_probe", "semi_supervised"}) {
        const wb::PluginConfig* ev = evaluator(p.config, name);
        REQUIRE_MESSAGE(ev, name);
        CHECK(ev->params.integers("views") == std::vector<std::int64_t>{0, 1});
      }
      // The profile's evaluator settings reach the sep-ViT too (a point changes only views).
      if (!profile.empty()) {
        CHECK(evaluator(p.config, "linear_probe")->params.integer("epochs") == 90);
        CHECK(evaluator(p.config, "linear_probe")->params.boolean("augment"));
      }
    }
    CHECK(sep == e.seeds.size());  // one sep-ViT point per seed
  }
}
