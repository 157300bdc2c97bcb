// The command line's delegations: `workbench bench` runs the separate workbench-bench beside the
// workbench executable (the production binary has no benchmark code), and says clearly what is
// missing when there is none.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "e2e_fixture.h"

namespace fs = std::filesystem;

using wbtest::run_shell;

TEST_CASE("workbench bench: runs workbench-bench beside it, or names what is missing") {
  const fs::path scratch = fs::temp_directory_path() / ("wb_test_cli_" + std::to_string(getpid()));
  fs::create_directories(scratch);
  const fs::path exe = WB_WORKBENCH_EXE;
  REQUIRE(fs::exists(exe.parent_path() / "workbench-bench"));

  // The benchmark list comes from workbench-bench, with its exit status.
  const auto [code, text] = run_shell(exe.string() + " bench --help", scratch);
  CHECK(code == 0);
  CHECK(text.find("usage: workbench-bench") != std::string::npos);
  CHECK(text.find("moe") != std::string::npos);
  const auto [unknown, unknown_text] =
      run_shell(exe.string() + " bench no_such_benchmark", scratch);
  CHECK(unknown == 2);
  CHECK(unknown_text.find("unknown benchmark 'no_such_benchmark'") != std::string::npos);

  // A workbench without a workbench-bench beside it: exit 2 and the target to build.
  const fs::path lone = scratch / "bin";
  fs::create_directories(lone);
  fs::copy_file(exe, lone / "workbench");
  const auto [missing, missing_text] =
      run_shell((lone / "workbench").string() + " bench moe", scratch);
  CHECK(missing == 2);
  CHECK(missing_text.find((lone / "workbench-bench").string() + " not found") != std::string::npos);
  CHECK(missing_text.find("--target workbench-bench") != std::string::npos);
  fs::remove_all(scratch);
}
