// Runs only under the ctest entry sdk_out_of_tree_matcher_used, after sdk_plugin.sh has built
// examples/centre_matcher against the installed SDK (skipped in ordinary runs).
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdlib>

#include "plugin/loader.h"
#include "test_ogar_helpers.h"
#include "workbench/matcher.h"
#include "workbench/registry.h"

TEST_CASE("external: the out-of-tree centre_distance matcher loads and matches" * doctest::skip()) {
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

// The same out-of-tree matcher, chosen by name as OGAR's matcher parameter: the loss must use
// its matches unchanged. The reference recomputes nearest-centre matches by plain loops and the
// loss with them (test_ogar_helpers.h).
TEST_CASE("external: ogar uses the out-of-tree centre_distance matcher" * doctest::skip()) {
  const char* dir = std::getenv("WB_EXTERNAL_PLUGIN_DIR");
  REQUIRE_MESSAGE(dir != nullptr, "WB_EXTERNAL_PLUGIN_DIR must name the example's build folder");
  wb::Registry registry;
  wb::PluginLoader loader(registry);
  loader.load_directory(WB_BUILD_DIR "/plugins");  // ogar itself
  REQUIRE(loader.load_directory(dir) == 1);
  REQUIRE(loader.failures().empty());
  REQUIRE(registry.find(wb::Kind::Loss, "ogar") != nullptr);

  using namespace crmoe_test;
  HandStep h;
  h.views[0] = View{{{0, 0, 1, 1}, {0.05, 0.1, 0.6, 0.7}, {0, 0, 0.4, 0.4}}, {false, false, true}};
  h.views[1] =
      View{{{0, 0, 1, 1}, {0.3, 0.2, 0.65, 0.75}, {0.6, 0.55, 0.4, 0.45}}, {true, false, false}};
  h.make(17);
  OgarSettings s;
  s.weight = 1;
  const double max_distance = 0.5;
  wb::Params mp = registry.defaults(wb::Kind::Matcher, "centre_distance");
  mp.set("max_distance", max_distance);
  auto loss = make_ogar(registry, s, "centre_distance", mp, h.g);
  OneRank comm;
  const wb::LossResult r = loss->compute(h.state(&comm));
  REQUIRE(std::isfinite(r.value.item<double>()));

  // Nearest key-patch centre; valid below max_distance query-patch widths.
  auto centre_ref = [&h, max_distance](int a, std::int64_t) {
    const View& q = h.views[a];
    const View& k = h.views[1 - a];
    const int g = static_cast<int>(h.g);
    RefMatch m;
    for (std::size_t i = 0; i < q.boxes.size(); ++i) {
      std::vector<int> idx;
      std::vector<bool> ok;
      for (int p = 0; p < g * g; ++p) {
        const Box a_box = patch_box(q.boxes[i], q.flips[i], g, p);
        int best = 0;
        double best_d = 1e30;
        for (int n = 0; n < g * g; ++n) {
          const Box b = patch_box(k.boxes[i], k.flips[i], g, n);
          const double dx = (a_box.x + a_box.w / 2) - (b.x + b.w / 2);
          const double dy = (a_box.y + a_box.h / 2) - (b.y + b.h / 2);
          const double d = std::sqrt(dx * dx + dy * dy);
          if (d < best_d) best_d = d, best = n;
        }
        idx.push_back(best);
        ok.push_back(best_d < max_distance * a_box.w);
      }
      m.index.push_back(idx);
      m.valid.push_back(ok);
    }
    return m;
  };
  const OgarRef ref = ogar_reference(h, s, centre_ref);
  CHECK(r.value.item<double>() == doctest::Approx(ref.value).epsilon(1e-5));
  CHECK(r.metrics.at("patch") == doctest::Approx(ref.patch).epsilon(1e-5));
  CHECK(r.metrics.at("valid_fraction") == doctest::Approx(ref.valid_fraction));
  CHECK(ref.valid_fraction > 0);
  CHECK(ref.valid_fraction < 1);
}
