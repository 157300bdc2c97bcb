// The test runner: doctest's own main, plus a check that a --test-case filter matched
// something. ctest runs every case in a process of its own, selected by name
// (doctest_discover_tests); CMake cuts a name at a ';', and the shortened name then matched no
// case and passed without running anything.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

int cases_started = 0;

struct CaseCounter : doctest::IReporter {
  explicit CaseCounter(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override { ++cases_started; }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

REGISTER_LISTENER("case_counter", 1, CaseCounter);

bool selects_cases(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    for (const char* flag : {"--test-case=", "-tc=", "--dt-test-case=", "--dt-tc="})
      if (std::strncmp(argv[i], flag, std::strlen(flag)) == 0) return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  // Plugin probe verdicts go to a cache folder of this build, never the user's; the workbench
  // processes the tests start inherit it.
  setenv("WORKBENCH_CACHE_DIR", WB_BUILD_DIR "/test_cache", 1);
  doctest::Context context(argc, argv);
  const int result = context.run();
  if (context.shouldExit()) return result;
  if (result == 0 && cases_started == 0 && selects_cases(argc, argv)) {
    std::fprintf(stderr, "no test case matches the --test-case filter (a name with ';'?)\n");
    return 1;
  }
  return result;
}
