#include <doctest/doctest.h>

#include <elf.h>
#include <sys/wait.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "e2e_fixture.h"  // run_shell
#include "fixture_temp_dir.h"
#include "plugin/loader.h"
#include "plugin/loader_elf.h"
#include "plugin/loader_probe.h"
#include "workbench/gate.h"
#include "workbench/plugin.h"  // WORKBENCH_ABI_VERSION
#include "workbench/registry.h"

namespace fs = std::filesystem;

namespace {
const fs::path kDir = WB_TEST_PLUGIN_DIR;
const fs::path kSlowDir = WB_SLOW_PLUGIN_DIR;

// Libraries in kDir: one good plugin, the others refused for one reason each.
constexpr int kLibraries = 10;

std::string reason_for(const wb::PluginLoader& loader, const std::string& file) {
  for (const auto& f : loader.failures())
    if (fs::path(f.path).filename() == file) return f.reason;
  return "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A fresh folder of this test process, removed at the end.
using wbtest::TempDir;

// Probing as the host does, with a cache file of the test's own.
wb::ProbeOptions probing(const fs::path& cache_file) {
  wb::ProbeOptions o = wb::default_probe_options();
  o.cache_file = cache_file;
  return o;
}

wb::ProbeOptions in_process() {
  wb::ProbeOptions o;
  o.enabled = false;
  return o;
}

// Replaces `target` by a copy of `source` the way an install does (a new file renamed over the
// old), so that a copy this process still has mapped is not changed under it.
void replace_file(const fs::path& source, const fs::path& target) {
  const fs::path tmp = target.string() + ".new";
  fs::copy_file(source, tmp, fs::copy_options::overwrite_existing);
  fs::rename(tmp, target);
}
}  // namespace

TEST_CASE("loader registers a good plugin and its objects keep the library loaded") {
  std::shared_ptr<wb::Gate> gate;
  {
    wb::Registry registry;
    wb::PluginLoader loader(registry);
    REQUIRE(loader.load_file(kDir / "test_good_gate.so"));
    const wb::Entry* e = registry.find(wb::Kind::Gate, "first_expert");
    REQUIRE(e != nullptr);
    REQUIRE(e->params.size() == 1);
    CHECK(e->params[0].describe() == "float in [0.0, 1.0]");
    gate = registry.make_gate("first_expert", registry.defaults(wb::Kind::Gate, "first_expert"),
                              wb::GateShape{4, 3, 0});
  }
  // The registry and its handle on the library are gone; the gate's code must still be mapped.
  REQUIRE(gate);
  wb::GateInput in;
  in.tokens_per_image = 2;
  auto r = gate->route(at::ones({2, 4}), in);
  CHECK(r.experts.sum().item<long>() == 0);
  CHECK(r.probs.size(1) == 3);
}

TEST_CASE("loader refuses mismatched and foreign libraries with the file and the reason") {
  // In this process, without probes: these checks run before any code of the library that
  // could crash (never_called dereferences null).
  wb::Registry registry;
  wb::PluginLoader loader(registry, in_process());
  for (const char* file :
       {"test_abi_mismatch.so", "test_torch_mismatch.so", "test_not_a_plugin.so",
        "test_throwing_registration.so", "test_wrong_info_size.so", "test_data_symbol.so"})
    CHECK_FALSE(loader.load_file(kDir / file));
  REQUIRE(loader.failures().size() == 6);
  const std::string abi = std::to_string(WORKBENCH_ABI_VERSION);
  const std::string next_abi = std::to_string(WORKBENCH_ABI_VERSION + 1);
  CHECK(contains(reason_for(loader, "test_abi_mismatch.so"),
                 "plugin ABI " + next_abi + ", this host uses ABI " + abi));
  CHECK(contains(reason_for(loader, "test_torch_mismatch.so"), "LibTorch 0.0.1"));
  CHECK(contains(reason_for(loader, "test_not_a_plugin.so"), "not a workbench plugin"));
  CHECK(
      contains(reason_for(loader, "test_throwing_registration.so"), "plugin refuses to register"));
  const std::string size = std::to_string(sizeof(wb_plugin_info));
  CHECK(contains(reason_for(loader, "test_wrong_info_size.so"),
                 "is " + std::to_string(sizeof(wb_plugin_info) - 8) + " bytes, this host's is " +
                     size + " bytes"));
  CHECK(contains(reason_for(loader, "test_data_symbol.so"),
                 "workbench_plugin_info is not a function (ELF symbol type OBJECT"));
  // The entry added before the throw was rolled back.
  CHECK(registry.find(wb::Kind::Matcher, "half_registered") == nullptr);
  CHECK(registry.all().empty());
}

TEST_CASE("loader reports a file that is not a shared library at all") {
  const fs::path junk = fs::temp_directory_path() / "wb_test_junk_plugin.so";
  std::ofstream(junk) << "this is not an ELF file";
  wb::Registry registry;
  wb::PluginLoader loader(registry);
  CHECK_FALSE(loader.load_file(junk));
  REQUIRE(loader.failures().size() == 1);
  CHECK(contains(loader.failures()[0].reason, "cannot be loaded: not an ELF file"));
  fs::remove(junk);
}

TEST_CASE("the symbol check reads what workbench_plugin_info is from the file") {
  using V = wb::SymbolCheck::Verdict;
  const std::string sym = "workbench_plugin_info";
  CHECK(wb::check_function_symbol(kDir / "test_good_gate.so", sym).verdict == V::Function);
  const wb::SymbolCheck data = wb::check_function_symbol(kDir / "test_data_symbol.so", sym);
  CHECK(data.verdict == V::NotFunction);
  CHECK(contains(data.reason, "OBJECT"));
  CHECK(wb::check_function_symbol(kDir / "test_not_a_plugin.so", sym).verdict == V::Missing);
  // A symbol of the library that is a function, and one that does not exist.
  CHECK(wb::check_function_symbol(kDir / "test_not_a_plugin.so", "not_a_plugin_answer").verdict ==
        V::Function);
  CHECK(wb::check_function_symbol(kDir / "test_good_gate.so", "no_such_symbol").verdict ==
        V::Missing);

  // Damaged files: every offset is checked against the file's size.
  TempDir tmp("elf");
  std::ifstream in(kDir / "test_good_gate.so", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(bytes.size() > 4096);
  std::ofstream(tmp.path() / "header_only.so", std::ios::binary) << bytes.substr(0, 64);
  const wb::SymbolCheck cut = wb::check_function_symbol(tmp.path() / "header_only.so", sym);
  CHECK(cut.verdict == V::NotElf);
  CHECK(contains(cut.reason, "beyond the end of the file"));
  std::string far = bytes;
  for (int i = 0; i < 8; ++i) far[0x28 + i] = '\x7f';  // e_shoff: far past the end
  std::ofstream(tmp.path() / "far_sections.so", std::ios::binary) << far;
  CHECK(wb::check_function_symbol(tmp.path() / "far_sections.so", sym).verdict == V::NotElf);
  std::string exe = bytes;
  exe[16] = ET_EXEC;  // e_type
  std::ofstream(tmp.path() / "executable.so", std::ios::binary) << exe;
  CHECK(contains(wb::check_function_symbol(tmp.path() / "executable.so", sym).reason,
                 "not a shared library"));
}

TEST_CASE("hostile libraries fail in their probes and the host lives on") {
  TempDir tmp("hostile");
  wb::Registry registry;
  wb::PluginLoader loader(registry, probing(tmp.path() / "probes.toml"));
  CHECK(loader.load_directory(kDir) == 1);  // only the good one
  // The data symbol and the library that is no plugin are refused from their files alone.
  CHECK(loader.probes_run() == kLibraries - 2);
  CHECK(loader.probes_cached() == 0);
  REQUIRE(loader.failures().size() == kLibraries - 1);
  CHECK(registry.find(wb::Kind::Gate, "first_expert") != nullptr);
  CHECK(registry.all().size() == 1);  // nothing of the hostile ones
  CHECK(contains(reason_for(loader, "test_abort_constructor.so"),
                 "the probe was killed by SIGABRT (Aborted) while loading the library"));
  CHECK(contains(reason_for(loader, "test_segv_registration.so"),
                 "the probe was killed by SIGSEGV (Segmentation fault) while loading"));
  CHECK(contains(reason_for(loader, "test_exit_constructor.so"),
                 "the probe exited with code 0 before it could report"));
  CHECK(contains(reason_for(loader, "test_data_symbol.so"), "is not a function"));
  CHECK(contains(reason_for(loader, "test_wrong_info_size.so"), "this host's is"));
  // The in-process verdicts come through the probe unchanged.
  CHECK(
      contains(reason_for(loader, "test_throwing_registration.so"), "plugin refuses to register"));
  CHECK(contains(reason_for(loader, "test_torch_mismatch.so"), "LibTorch 0.0.1"));
}

TEST_CASE("probe verdicts are cached and a touched or rewritten library is probed again") {
  TempDir tmp("cache");
  const fs::path cache = tmp.path() / "probes.toml";
  const fs::path a = tmp.path() / "a.so", b = tmp.path() / "b.so";
  fs::copy_file(kDir / "test_good_gate.so", a);
  fs::copy_file(kDir / "test_abort_constructor.so", b);
  auto load = [&](int loaded, int probed, int cached) {
    wb::Registry registry;
    wb::PluginLoader loader(registry, probing(cache));
    CHECK(loader.load_directory(tmp.path()) == loaded);
    CHECK(loader.probes_run() == probed);
    CHECK(loader.probes_cached() == cached);
    return reason_for(loader, "a.so") + "|" + reason_for(loader, "b.so");
  };
  std::string reasons = load(1, 2, 0);
  CHECK(contains(reasons, "|the probe was killed by SIGABRT"));
  // The cache file holds both verdicts in this host's section, keyed by absolute path.
  const toml::table doc = toml::parse_file(cache.string());
  REQUIRE(doc["host"].as_array() != nullptr);
  CHECK(doc["host"].as_array()->size() == 1);
  const toml::array* libs = doc["host"][0]["library"].as_array();
  REQUIRE(libs != nullptr);
  CHECK(libs->size() == 2);
  CHECK(doc["host"][0]["library"][0]["path"].value_or(std::string()) == fs::absolute(a).string());

  CHECK(load(1, 0, 2) == reasons);  // unchanged: nothing probed, the same outcome

  fs::last_write_time(a, fs::last_write_time(a) + std::chrono::seconds(1));
  load(1, 1, 1);  // touched: probed again

  replace_file(kDir / "test_abort_constructor.so", a);
  reasons = load(0, 1, 1);  // rewritten: probed again, and now refused
  CHECK(contains(reasons, "SIGABRT"));
}

TEST_CASE("the probe cache keeps other hosts' sections while their core is unchanged") {
  TempDir tmp("hosts");
  const fs::path cache = tmp.path() / "probes.toml";
  // Two other workbench builds: one whose libworkbench_core is as recorded, one rebuilt since.
  const fs::path current = tmp.path() / "current_core.so", rebuilt = tmp.path() / "rebuilt_core.so";
  std::ofstream(current) << "a core library";
  std::ofstream(rebuilt) << "a core library, rebuilt";
  const auto stamp = [](const fs::path& f, std::int64_t shift) {
    const wb::LibraryStamp s = wb::stamp_of(f);
    return "core = '" + s.path + "'\ncore_size = " + std::to_string(s.size) +
           "\ncore_mtime_ns = " + std::to_string(s.mtime_ns + shift) + "\n";
  };
  std::ofstream(cache) << "[[host]]\nid = 'other build'\n"
                       << stamp(current, 0) << "[[host]]\nid = 'stale build'\n"
                       << stamp(rebuilt, -1);
  wb::Registry registry;
  wb::PluginLoader loader(registry, probing(cache));
  CHECK(loader.load_file(kDir / "test_good_gate.so"));
  const toml::table doc = toml::parse_file(cache.string());
  REQUIRE(doc["host"].as_array() != nullptr);
  REQUIRE(doc["host"].as_array()->size() == 2);
  CHECK(doc["host"][0]["id"].value_or(std::string()) == "other build");
  CHECK(doc["host"][1]["library"][0]["path"].value_or(std::string()) ==
        (kDir / "test_good_gate.so").string());
}

TEST_CASE("a probe cache that cannot be written only costs probes") {
  TempDir tmp("nocache");
  std::ofstream(tmp.path() / "a_file") << "not a folder";
  const fs::path cache = tmp.path() / "a_file" / "probes.toml";
  for (int round = 0; round < 2; ++round) {
    wb::Registry registry;
    wb::PluginLoader loader(registry, probing(cache));
    CHECK(loader.load_file(kDir / "test_good_gate.so"));
    CHECK(loader.probes_run() == 1);
  }
}

TEST_CASE("without a working probe program nothing is loaded and nothing is cached") {
  TempDir tmp("no_program");
  const fs::path cache = tmp.path() / "probes.toml";
  wb::ProbeOptions broken = probing(cache);
  broken.program = "/bin/false";  // exits 1 without a report
  {
    wb::Registry registry;
    wb::PluginLoader loader(registry, broken);
    CHECK_FALSE(loader.load_file(kDir / "test_good_gate.so"));
    CHECK(contains(reason_for(loader, "test_good_gate.so"),
                   "cannot be probed: the probe process (/bin/false _probe) failed: it exited "
                   "with code 1"));
    CHECK(registry.all().empty());
  }
  {
    broken.program.clear();
    wb::Registry registry;
    wb::PluginLoader loader(registry, broken);
    CHECK_FALSE(loader.load_file(kDir / "test_good_gate.so"));
    CHECK(contains(reason_for(loader, "test_good_gate.so"), "no workbench executable"));
  }
  // Those failures said nothing about the library: a working probe runs again and accepts it.
  wb::Registry registry;
  wb::PluginLoader loader(registry, probing(cache));
  CHECK(loader.load_file(kDir / "test_good_gate.so"));
  CHECK(loader.probes_run() == 1);
}

TEST_CASE("a probe that never finishes is killed at the timeout") {
  TempDir tmp("timeout");
  wb::ProbeOptions options = probing(tmp.path() / "probes.toml");
  options.timeout_seconds = 1;
  wb::Registry registry;
  wb::PluginLoader loader(registry, options);
  CHECK(loader.load_directory(kSlowDir) == 0);
  REQUIRE(loader.failures().size() == 1);
  CHECK(contains(loader.failures()[0].reason, "the probe did not finish within 1 s"));
}

TEST_CASE("workbench _probe reports the manifest and every entry's parameters") {
  TempDir tmp("probe_verb");
  const auto [status, output] = wbtest::run_shell(
      std::string(WB_WORKBENCH_EXE) + " _probe " + (kDir / "test_good_gate.so").string() + " " +
          (kDir / "test_torch_mismatch.so").string() + " 2>/dev/null",
      tmp.path());
  REQUIRE(status == 0);
  const toml::table report = toml::parse(output);
  const toml::node_view good = report["library"][0];
  CHECK(good["ok"].value_or(false));
  CHECK(good["path"].value_or(std::string()) == (kDir / "test_good_gate.so").string());
  CHECK(good["description"].value_or(std::string()) == "test: a gate that always picks expert 0");
  CHECK(good["entry"][0]["kind"].value_or(std::string()) == "gate");
  CHECK(good["entry"][0]["name"].value_or(std::string()) == "first_expert");
  CHECK(good["entry"][0]["params"][0].value_or(std::string()) ==
        "unused = 0.5  [float in [0.0, 1.0]]");
  const toml::node_view refused = report["library"][1];
  CHECK_FALSE(refused["ok"].value_or(true));
  CHECK(contains(refused["reason"].value_or(std::string()), "LibTorch 0.0.1"));
}

// The commands below use the test binary's shared probe cache (tests/main.cpp) for the host's
// own plugins, and fresh copies of the hostile libraries, which no cache knows.
const char* const kHostile[] = {"test_abort_constructor.so", "test_segv_registration.so",
                                "test_exit_constructor.so", "test_data_symbol.so",
                                "test_wrong_info_size.so"};

TEST_CASE("workbench plugins lists hostile libraries as failures and exits normally") {
  TempDir tmp("plugins_verb");
  const fs::path dir = tmp.path() / "plugins";
  fs::create_directories(dir);
  for (const char* file : kHostile) fs::copy_file(kDir / file, dir / file);
  fs::copy_file(kDir / "test_good_gate.so", dir / "test_good_gate.so");
  const std::string command = std::string(WB_WORKBENCH_EXE) + " plugins --plugin-path " +
                              dir.string() + " --plugin-path " +
                              (dir / "test_good_gate.so").string();  // loaded once all the same
  const auto [first_status, first] = wbtest::run_shell(command, tmp.path());
  CHECK(first_status == 0);
  CHECK(contains(first, "gate first_expert  (" + (dir / "test_good_gate.so").string()));
  CHECK(contains(first, "backbone vit"));
  for (const std::string line :
       {"test_abort_constructor.so: the probe was killed by SIGABRT",
        "test_segv_registration.so: the probe was killed by SIGSEGV",
        "test_exit_constructor.so: the probe exited with code 0 before it could report",
        "test_data_symbol.so: not a workbench plugin: workbench_plugin_info is not a function",
        "test_wrong_info_size.so: its plugin record (wb_plugin_info) is"})
    CHECK_MESSAGE(contains(first, "FAILED " + dir.string() + "/" + line), line);
  CHECK(contains(first, "5 failed ("));
  CHECK_FALSE(contains(first, " failed (0 probed now"));

  // Warm cache: the same listing without a probe.
  const auto [second_status, second] = wbtest::run_shell(command, tmp.path());
  CHECK(second_status == 0);
  CHECK(contains(second, "5 failed (0 probed now, "));
  CHECK(contains(second, "FAILED " + dir.string() + "/test_abort_constructor.so"));
}

TEST_CASE("run --dry-run validates an experiment beside a hostile library") {
  TempDir tmp("dry_run");
  const fs::path dir = tmp.path() / "plugins";
  fs::create_directories(dir);
  fs::copy_file(kDir / "test_segv_registration.so", dir / "test_segv_registration.so");
  const auto [status, output] =
      wbtest::run_shell(std::string(WB_WORKBENCH_EXE) + " run " + WB_SOURCE_DIR +
                            "/experiments/quickstart.toml --dry-run --plugin-path " + dir.string(),
                        tmp.path());
  CHECK(status == 0);
  CHECK(contains(output, "1 point"));
  CHECK(contains(output, "warning: plugin library " + dir.string() +
                             "/test_segv_registration.so not loaded: the probe was killed by "
                             "SIGSEGV"));
}

TEST_CASE(
    "--plugin-path naming nothing is an error but a missing WORKBENCH_PLUGIN_PATH entry is not") {
  TempDir tmp("missing_path");
  const std::string missing = (tmp.path() / "no_such_folder").string();
  const auto [status, output] = wbtest::run_shell(
      std::string(WB_WORKBENCH_EXE) + " plugins --names --plugin-path " + missing, tmp.path());
  CHECK(status == 1);
  CHECK(contains(output, "error: --plugin-path " + missing + ": no such file or folder"));

  wb::Registry registry;
  CHECK_THROWS_WITH_AS(wb::load_plugins(registry, {missing}),
                       ("--plugin-path " + missing + ": no such file or folder").c_str(),
                       std::runtime_error);

  const auto [env_status, env] = wbtest::run_shell(
      "WORKBENCH_PLUGIN_PATH=" + missing + " " + WB_WORKBENCH_EXE + " plugins --names", tmp.path());
  CHECK(env_status == 0);
  CHECK(contains(
      env, "warning: WORKBENCH_PLUGIN_PATH names " + missing + ", which does not exist (ignored)"));
  CHECK(contains(env, "backbone vit"));  // the host's own plugins still load
}
