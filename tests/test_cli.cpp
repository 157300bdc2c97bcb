// The command line's delegations: `workbench bench` runs the separate workbench-bench beside the
// workbench executable (the production binary has no benchmark code), and says clearly what is
// missing when there is none; how verbs that fail with an exception end (process/verb_exit.h).
#include <doctest/doctest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>

#include "e2e_fixture.h"
#include "process/verb_exit.h"

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

TEST_CASE(
    "verb_exit_code: a wrong request exits 2, other errors 1, the message as the verbs log it") {
  auto exit_of = [](const auto& error, auto& sink) {
    try {
      throw error;
    } catch (...) {
      return wb::verb_exit_code(sink);
    }
  };
  std::ostringstream err;
  CHECK(exit_of(std::invalid_argument("--data x: no [datasets.x]"), err) == 2);
  CHECK(exit_of(std::runtime_error("a.h5: cannot open"), err) == 1);
  CHECK(exit_of(std::out_of_range("item 9 of 3"), err) == 1);  // a logic_error, not a request's
  CHECK(err.str() ==
        "error: --data x: no [datasets.x]\nerror: a.h5: cannot open\n"
        "error: item 9 of 3\n");

  // Into a run.log: the message alone, at level error.
  std::ostringstream lines;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(lines);
  sink->set_pattern("[%l] %v");
  spdlog::logger log("test", sink);
  CHECK(exit_of(std::invalid_argument("out already holds a checkpoint"), log) == 2);
  CHECK(exit_of(std::runtime_error("disk full"), log) == 1);
  CHECK(lines.str() == "[error] out already holds a checkpoint\n[error] disk full\n");

  // What is not a std::exception is not the verb's to judge: it goes on up.
  CHECK_THROWS_AS(exit_of(42, err), int);
}
