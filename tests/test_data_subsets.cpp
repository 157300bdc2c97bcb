// Subsets: label fractions, k shots, class filters, validation splits, first N, and the
// order in which open_dataset applies them.
#include <doctest/doctest.h>

#include <fstream>
#include <map>
#include <set>

#include "data/datasets.h"
#include "test_data_helpers.h"

using wbtest::item_id;
using wbtest::SyntheticDataset;

namespace {

std::map<std::int64_t, std::int64_t> per_class(const wb::Dataset& d) {
  std::map<std::int64_t, std::int64_t> n;
  for (std::int64_t i = 0; i < d.size(); ++i) ++n[d.label(i)];
  return n;
}

std::vector<std::int64_t> ids(const wb::Dataset& d) {
  std::vector<std::int64_t> v;
  for (std::int64_t i = 0; i < d.size(); ++i) v.push_back(item_id(d, i));
  return v;
}

std::shared_ptr<const wb::Dataset> base() {
  return std::make_shared<SyntheticDataset>(wbtest::labels_with_counts({100, 50, 7, 1}), 1, 4);
}

}  // namespace

TEST_CASE("label fractions keep round(fraction x count), at least 1, per class, per seed") {
  auto d = base();
  auto ten = wb::data::label_fraction(d, 0.1, 3);
  CHECK(per_class(*ten) == std::map<std::int64_t, std::int64_t>{{0, 10}, {1, 5}, {2, 1}, {3, 1}});
  auto one = wb::data::label_fraction(d, 0.01, 3);
  CHECK(per_class(*one) == std::map<std::int64_t, std::int64_t>{{0, 1}, {1, 1}, {2, 1}, {3, 1}});
  CHECK(ids(*wb::data::label_fraction(d, 0.1, 3)) == ids(*ten));  // deterministic
  CHECK(ids(*wb::data::label_fraction(d, 0.1, 4)) != ids(*ten));  // the seed matters
  // Labels stay those of the items kept.
  for (std::int64_t i = 0; i < ten->size(); ++i) CHECK(ten->label(i) == d->label(item_id(*ten, i)));
  CHECK(wb::data::label_fraction(d, 1.0, 0) == d);
  CHECK_THROWS_AS(wb::data::label_fraction(d, 0.0, 0), std::invalid_argument);
}

TEST_CASE("k shots per class, deterministic per seed") {
  auto d = base();
  auto four = wb::data::k_shots(d, 4, 9);
  CHECK(per_class(*four) == std::map<std::int64_t, std::int64_t>{{0, 4}, {1, 4}, {2, 4}, {3, 1}});
  CHECK(ids(*wb::data::k_shots(d, 4, 9)) == ids(*four));
  CHECK(ids(*wb::data::k_shots(d, 4, 10)) != ids(*four));
  const auto v = ids(*four);
  CHECK(std::is_sorted(v.begin(), v.end()));  // base order kept
}

TEST_CASE("class filter: relabelled or not, complete and exclusive") {
  auto d = base();
  auto f = wb::data::filter_classes(d, {2, 0}, true);
  CHECK(f->size() == 107);
  CHECK(f->classes() == 2);
  CHECK(per_class(*f) == std::map<std::int64_t, std::int64_t>{{0, 7}, {1, 100}});  // 2 -> 0, 0 -> 1
  auto keep = wb::data::filter_classes(d, {2, 0}, false);
  CHECK(keep->classes() == 4);
  CHECK(per_class(*keep) == std::map<std::int64_t, std::int64_t>{{0, 100}, {2, 7}});
  // Every item of classes 0 and 2, nothing else.
  std::set<std::int64_t> expect;
  for (std::int64_t i = 0; i < d->size(); ++i)
    if (d->label(i) == 0 || d->label(i) == 2) expect.insert(i);
  const auto got = ids(*keep);
  CHECK(std::set<std::int64_t>(got.begin(), got.end()) == expect);
  CHECK_THROWS_WITH_AS(wb::data::filter_classes(d, {4}, true), doctest::Contains("class 4"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(wb::data::filter_classes(d, {1, 1}, true), doctest::Contains("listed twice"),
                       std::invalid_argument);
}

TEST_CASE("validation split is class-balanced, seeded, disjoint from train and complete") {
  auto d = base();
  auto tv = wb::data::split_validation(d, 0.2, 1);
  CHECK(per_class(*tv.val) == std::map<std::int64_t, std::int64_t>{{0, 20}, {1, 10}, {2, 1}});
  CHECK(per_class(*tv.train) ==
        std::map<std::int64_t, std::int64_t>{{0, 80}, {1, 40}, {2, 6}, {3, 1}});
  const auto a = ids(*tv.train), b = ids(*tv.val);
  std::set<std::int64_t> all(a.begin(), a.end());
  for (auto i : b) CHECK(all.insert(i).second);               // disjoint
  CHECK(static_cast<std::int64_t>(all.size()) == d->size());  // complete
  CHECK(ids(*wb::data::split_validation(d, 0.2, 1).val) == b);
  CHECK(ids(*wb::data::split_validation(d, 0.2, 2).val) != b);
  CHECK(wb::data::first_n(d, 10)->size() == 10);
  CHECK(item_id(*wb::data::first_n(d, 10), 9) == 9);
}

TEST_CASE("open_dataset: limit, class filter, val split, then fraction and shots on train") {
  wbtest::TempDir dir;
  // 60 items, labels i % 3, as raw IDX files.
  auto be32 = [](std::ofstream& o, std::uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) o.put(static_cast<char>(v >> s));
  };
  {
    std::ofstream im(dir.file("train-images-idx3-ubyte"), std::ios::binary);
    std::ofstream lb(dir.file("train-labels-idx1-ubyte"), std::ios::binary);
    be32(im, 0x803), be32(im, 60), be32(im, 2), be32(im, 2);
    be32(lb, 0x801), be32(lb, 60);
    for (int i = 0; i < 60; ++i) {
      for (int p = 0; p < 4; ++p) im.put(static_cast<char>(i));
      lb.put(static_cast<char>(i % 3));
    }
  }
  wb::Params p("data");
  p.set("dataset", std::string("idx"));
  p.set("path", dir.path().string());
  p.set("train_limit", std::int64_t{48});
  p.set("classes", std::vector<std::int64_t>{2, 1});
  p.set("val_fraction", 0.25);
  p.set("subset_seed", std::int64_t{5});
  auto pixel_ids = [](const wb::Dataset& d) {
    std::set<int> s;
    for (std::int64_t i = 0; i < d.size(); ++i) s.insert(d.image(i).pixels[0]);
    return s;
  };
  auto train = wb::open_dataset(p, wb::Split::Train);
  auto val = wb::open_dataset(p, wb::Split::Val);
  // First 48 items: 16 per class; classes 2 and 1 kept (32 items), relabelled 0 and 1.
  CHECK(train->classes() == 2);
  CHECK(per_class(*val) == std::map<std::int64_t, std::int64_t>{{0, 4}, {1, 4}});
  CHECK(per_class(*train) == std::map<std::int64_t, std::int64_t>{{0, 12}, {1, 12}});
  auto a = pixel_ids(*train), b = pixel_ids(*val);
  for (int i : b) CHECK(a.count(i) == 0);
  a.insert(b.begin(), b.end());
  std::set<int> expect;
  for (int i = 0; i < 48; ++i)
    if (i % 3 != 0) expect.insert(i);
  CHECK(a == expect);
  CHECK(train->label(0) == (*a.begin() % 3 == 2 ? 0 : 1));
  p.set("shots", std::int64_t{2});
  CHECK(wb::open_dataset(p, wb::Split::Train)->size() == 4);
  CHECK(wb::open_dataset(p, wb::Split::Val)->size() == 8);  // shots apply to train only
  p.set("val_fraction", 0.0);
  CHECK_THROWS_WITH_AS(wb::open_dataset(p, wb::Split::Val), doctest::Contains("val_fraction"),
                       std::invalid_argument);
}
