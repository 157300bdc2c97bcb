// Runs only under the ctest entry sdk_out_of_tree_matcher_used, after sdk_plugin.sh has built
// examples/centre_matcher against the installed SDK (skipped in ordinary runs).
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <cstdlib>

#include "plugin/loader.h"
#include "workbench/matcher.h"
#include "workbench/registry.h"

TEST_CASE("external: the out-of-tree centre_distance matcher loads and matches" *
          doctest::skip()) {
  const char* dir = std::getenv("WB_EXTERNAL_PLUGIN_DIR");
  REQUIRE_MESSAGE(dir != nullptr, "WB_EXTERNAL_PLUGIN_DIR must name the example's build folder");
  wb::Registry registry;
  wb::PluginLoader loader(registry);
  REQUIRE(loader.load_directory(dir) == 1);
  REQUIRE(loader.failures().empty());
  auto matcher = registry.make_matcher("centre_distance",
                                       registry.defaults(wb::Kind::Matcher, "centre_distance"));

  // Image 0: both views are the whole image, the key view flipped: patch (r, c) of the query
  // sits where patch (r, g-1-c) of the key is. Image 1: the key view is the right half of the
  // image, so query column 0 (left quarter) is far from every key patch.
  const int g = 2;
  wb::ViewGeometry query{at::tensor({0.f, 0.f, 1.f, 1.f, 0.f, 0.f, 1.f, 1.f}).reshape({2, 4}),
                         at::tensor({0, 0}).to(at::kBool)};
  wb::ViewGeometry key{at::tensor({0.f, 0.f, 1.f, 1.f, 0.5f, 0.f, 0.5f, 1.f}).reshape({2, 4}),
                       at::tensor({1, 0}).to(at::kBool)};
  wb::MatchInput in;
  in.grid = g;
  in.query_view = &query;
  in.key_view = &key;
  const wb::Match m = matcher->match(in);
  CHECK(at::equal(m.index[0], at::tensor({1, 0, 3, 2}, at::kLong)));
  CHECK(m.valid[0].all().item<bool>());
  // Image 1: key patches are quarter-width columns at x centres 0.625 and 0.875.
  // Query column 1 (centre 0.75) is 0.125 away (< 0.5 x 0.5 width): valid.
  // Query column 0 (centre 0.25) is 0.375 away (> 0.25): invalid.
  CHECK(at::equal(m.valid[1], at::tensor({0, 1, 0, 1}).to(at::kBool)));
  CHECK(m.index[1][1].item<long>() % 2 == 0);  // a left key column (x 0.625) is nearest
}
