// Fuzz target: the experiment-file parser and validator (config/experiment.*, validate.*,
// tree.*) with the configuration tests' registry of fake plugins. Input: an experiment file;
// its lines "#set KEY=VALUE" are also given as --set overrides and "#profile NAME" as
// --profile (comments to TOML, so the seeds stay valid files).
// Findings: crashes, sanitizer reports, any exception other than wb::ConfigError (every
// problem must be reported with its place), and a point whose canonical TOML does not read
// back to the same configuration and id (what a point's child process does with config.toml).
#include <cstdint>
#include <sstream>
#include <string>

#include "config/experiment.h"
#include "config/run_config.h"
#include "config_test_registry.h"
#include "fuzz_files.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const wb::Registry* registry = [] {
    auto* r = new wb::Registry();
    wb::test::add_fake_plugins(*r);
    return r;
  }();
  const std::string text(reinterpret_cast<const char*>(data), size);
  wb::ExperimentOptions options;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("#set ", 0) == 0) options.overrides.push_back(line.substr(5));
    if (line.rfind("#profile ", 0) == 0) options.profile = line.substr(9);
  }
  wb::Experiment e;
  try {
    e = wb::parse_experiment(text, "fuzz.toml", *registry, options);
  } catch (const wb::ConfigError&) {
    return 0;
  }
  for (const auto& p : e.points) {
    const wb::RunConfig back = wb::parse_run_config(p.config.toml, "config.toml", *registry);
    if (back.toml != p.config.toml)
      wbfuzz::broken("config.toml reads back differently:\n" + p.config.toml + "\n---\n" +
                     back.toml);
    if (back.id != p.id || p.config.id != p.id) wbfuzz::broken("point id changes on reading back");
  }
  (void)wb::format_points_table(e);
  return 0;
}
