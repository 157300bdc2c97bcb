#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "plugin/loader.h"
#include "workbench/gate.h"
#include "workbench/plugin.h"  // WORKBENCH_ABI_VERSION
#include "workbench/registry.h"

namespace fs = std::filesystem;

namespace {
const fs::path kDir = WB_TEST_PLUGIN_DIR;

std::string reason_for(const wb::PluginLoader& loader, const std::string& file) {
  for (const auto& f : loader.failures())
    if (fs::path(f.path).filename() == file) return f.reason;
  return "";
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
  wb::Registry registry;
  wb::PluginLoader loader(registry);
  CHECK_FALSE(loader.load_file(kDir / "test_abi_mismatch.so"));
  CHECK_FALSE(loader.load_file(kDir / "test_torch_mismatch.so"));
  CHECK_FALSE(loader.load_file(kDir / "test_not_a_plugin.so"));
  CHECK_FALSE(loader.load_file(kDir / "test_throwing_registration.so"));
  REQUIRE(loader.failures().size() == 4);
  const std::string abi = "plugin ABI " + std::to_string(WORKBENCH_ABI_VERSION + 1) +
                          ", this host uses ABI " + std::to_string(WORKBENCH_ABI_VERSION);
  CHECK(reason_for(loader, "test_abi_mismatch.so").find(abi) != std::string::npos);
  CHECK(reason_for(loader, "test_torch_mismatch.so").find("LibTorch 0.0.1") != std::string::npos);
  CHECK(reason_for(loader, "test_not_a_plugin.so").find("not a workbench plugin") !=
        std::string::npos);
  CHECK(reason_for(loader, "test_throwing_registration.so").find("plugin refuses to register") !=
        std::string::npos);
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
  CHECK(loader.failures()[0].reason.find("cannot be loaded") != std::string::npos);
  fs::remove(junk);
}

TEST_CASE("a directory load keeps going past bad libraries") {
  wb::Registry registry;
  wb::PluginLoader loader(registry);
  CHECK(loader.load_directory(kDir) == 1);  // only the good one
  CHECK(loader.failures().size() == 4);
  CHECK(registry.find(wb::Kind::Gate, "first_expert") != nullptr);
}
