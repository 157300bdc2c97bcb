// wb::Loader: batches depend only on (seed, epoch, batch), not on the number of workers;
// order, drop_last, errors and shutdown.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <set>

#include "test_data_helpers.h"
#include "workbench/views.h"

using wbtest::SyntheticDataset;

namespace {

std::vector<wb::ViewRecipe> moco_views(std::int64_t size) {
  auto a = wb::view_preset("moco1"), b = wb::view_preset("moco2");
  a.size = b.size = size;
  return {a, b};
}

std::vector<wb::Batch> epoch_batches(wb::Loader& loader, std::int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<wb::Batch> out;
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

bool same(const wb::Batch& a, const wb::Batch& b) {
  if (a.views.size() != b.views.size()) return false;
  for (std::size_t v = 0; v < a.views.size(); ++v)
    if (!a.views[v].equal(b.views[v]) || !a.geometry[v].box.equal(b.geometry[v].box) ||
        !a.geometry[v].flip.equal(b.geometry[v].flip))
      return false;
  return a.labels.equal(b.labels) && a.index.equal(b.index);
}

std::shared_ptr<const wb::Dataset> data37() {
  std::vector<std::int64_t> labels(37);
  for (int i = 0; i < 37; ++i) labels[i] = i % 4;
  return std::make_shared<SyntheticDataset>(labels, 3, 12);
}

}  // namespace

TEST_CASE("data loader: 1, 4 and 0 workers give identical batches, the seed changes them") {
  auto data = data37();
  wb::LoaderOptions o;
  o.batch_size = 5;
  o.drop_last = false;
  o.seed = 11;
  o.workers = 1;
  wb::Loader one(data, moco_views(8), o);
  o.workers = 4;
  o.prefetch = 2;
  wb::Loader four(data, moco_views(8), o);
  o.workers = 0;
  wb::Loader inline_loader(data, moco_views(8), o);
  for (std::int64_t epoch : {0, 1}) {
    const auto a = epoch_batches(one, epoch), b = epoch_batches(four, epoch),
               c = epoch_batches(inline_loader, epoch);
    REQUIRE(a.size() == 8);
    REQUIRE(b.size() == 8);
    REQUIRE(c.size() == 8);
    for (std::size_t i = 0; i < a.size(); ++i) {
      CHECK(same(a[i], b[i]));
      CHECK(same(a[i], c[i]));
    }
  }
  o.seed = 12;
  o.workers = 2;
  wb::Loader other(data, moco_views(8), o);
  const auto x = epoch_batches(one, 0), y = epoch_batches(other, 0);
  CHECK_FALSE(x[0].index.equal(y[0].index));
  // Same order, other seed: the views still differ (their RNGs depend on the seed).
  o.shuffle = false;
  wb::Loader p(data, moco_views(8), o);
  o.seed = 13;
  wb::Loader q(data, moco_views(8), o);
  const auto pb = epoch_batches(p, 0), qb = epoch_batches(q, 0);
  CHECK(pb[0].index.equal(qb[0].index));
  CHECK_FALSE(pb[0].views[0].equal(qb[0].views[0]));
  // Epochs reshuffle.
  CHECK_FALSE(epoch_batches(one, 0)[0].index.equal(epoch_batches(one, 1)[0].index));
}

TEST_CASE("data loader: every epoch is a permutation, drop_last, shapes and labels") {
  auto data = data37();
  wb::LoaderOptions o;
  o.batch_size = 5;
  o.drop_last = false;
  o.workers = 2;
  wb::Loader loader(data, moco_views(8), o);
  CHECK(loader.batches_per_epoch() == 8);
  const auto batches = epoch_batches(loader, 3);
  std::multiset<std::int64_t> seen;
  for (const auto& b : batches) {
    REQUIRE(b.views.size() == 2);
    CHECK(b.views[1].sizes() == at::IntArrayRef({b.size(), 3, 8, 8}));
    CHECK(b.geometry[0].box.sizes() == at::IntArrayRef({b.size(), 4}));
    CHECK((b.geometry[0].flip.scalar_type() == at::kBool));
    CHECK((b.labels.scalar_type() == at::kLong));
    for (std::int64_t i = 0; i < b.size(); ++i) {
      const std::int64_t idx = b.index[i].item<std::int64_t>();
      seen.insert(idx);
      CHECK(b.labels[i].item<std::int64_t>() == data->label(idx));
    }
    // Boxes inside the image.
    CHECK((b.geometry[0].box.select(1, 0) + b.geometry[0].box.select(1, 2))
              .le(1.0001)
              .all()
              .item<bool>());
  }
  CHECK(batches.back().size() == 2);
  CHECK(seen.size() == 37);
  CHECK(std::set<std::int64_t>(seen.begin(), seen.end()).size() == 37);
  CHECK_FALSE(loader.next().has_value());  // stays at the end

  o.drop_last = true;
  wb::Loader dropping(data, moco_views(8), o);
  CHECK(dropping.batches_per_epoch() == 7);
  const auto full = epoch_batches(dropping, 0);
  CHECK(full.size() == 7);
  for (const auto& b : full) CHECK(b.size() == 5);
}

TEST_CASE("data loader: views of an eval recipe are identical, errors reach next()") {
  auto data = data37();
  wb::LoaderOptions o;
  o.batch_size = 4;
  o.workers = 2;
  wb::Loader loader(data, {wb::view_preset("eval"), wb::view_preset("eval")}, o);
  const auto b = loader.next();
  REQUIRE(b);
  CHECK(b->views[0].equal(b->views[1]));
  CHECK(b->geometry[0].box.equal(at::tensor({0.f, 0.f, 1.f, 1.f}).repeat({4, 1})));

  std::vector<std::int64_t> labels(10, 0);
  auto broken = std::make_shared<SyntheticDataset>(labels, 1, 6, 6);
  o.shuffle = false;
  wb::Loader bad(broken, {wb::view_preset("train")}, o);
  CHECK(bad.next().has_value());  // items 0-3
  CHECK_THROWS_WITH_AS(bad.next(), doctest::Contains("synthetic item 6 is broken"),
                       std::runtime_error);
}

TEST_CASE("data loader: destroyed or restarted mid-epoch without hanging") {
  std::vector<std::int64_t> labels(400, 1);
  auto data = std::make_shared<SyntheticDataset>(labels, 3, 16);
  wb::LoaderOptions o;
  o.batch_size = 8;
  o.workers = 3;
  o.prefetch = 2;
  {
    wb::Loader loader(data, moco_views(16), o);
    REQUIRE(loader.next());
    loader.start_epoch(1);  // abandons epoch 0's prepared batches
    const auto b = loader.next();
    REQUIRE(b);
    wb::Loader again(data, moco_views(16), o);
    again.start_epoch(1);
    CHECK(same(*b, *again.next()));
  }  // destroyed with batches in flight
  wb::Batch moved = *wb::Loader(data, moco_views(16), o).next();
  const wb::Batch cpu = moved.to(c10::Device(c10::kCPU));
  CHECK(cpu.views[0].equal(moved.views[0]));
  CHECK_FALSE(cpu.cluster.defined());
}

TEST_CASE("data loader: 2 ranks together see exactly the global batches of 1 process") {
  // One global order (docs/scale.md): rank r takes its slice of each global batch; every view's
  // draws come from the image's global position, so the slices side by side are the batch of
  // a single process: images, labels, view pixels, crop boxes and flips. 37 images in batches
  // of 6 also check the last, partial batch (1 image: rank 0 gets none of it).
  auto data = data37();
  wb::LoaderOptions o;
  o.batch_size = 6;
  o.drop_last = false;
  o.seed = 5;
  o.workers = 2;
  wb::Loader single(data, moco_views(8), o);
  o.world = 2;
  o.rank = 0;
  wb::Loader rank0(data, moco_views(8), o);
  o.rank = 1;
  o.workers = 0;
  wb::Loader rank1(data, moco_views(8), o);
  for (std::int64_t epoch : {0, 1}) {
    const auto whole = epoch_batches(single, epoch), a = epoch_batches(rank0, epoch),
               b = epoch_batches(rank1, epoch);
    REQUIRE(whole.size() == 7);
    REQUIRE(a.size() == whole.size());
    REQUIRE(b.size() == whole.size());
    for (std::size_t i = 0; i < whole.size(); ++i) {
      const std::int64_t n = whole[i].labels.size(0);
      CHECK(a[i].labels.size(0) == n / 2);
      CHECK(b[i].labels.size(0) == n - n / 2);
      wb::Batch joined;
      joined.labels = at::cat({a[i].labels, b[i].labels});
      joined.index = at::cat({a[i].index, b[i].index});
      for (std::size_t v = 0; v < 2; ++v) {
        joined.views.push_back(at::cat({a[i].views[v], b[i].views[v]}));
        joined.geometry.push_back({at::cat({a[i].geometry[v].box, b[i].geometry[v].box}),
                                   at::cat({a[i].geometry[v].flip, b[i].geometry[v].flip})});
      }
      CHECK(same(joined, whole[i]));
    }
    // The ranks' images differ: neighbours in the data set are not paired up across ranks.
    CHECK_FALSE(a[0].index.equal(b[0].index));
  }
  o.rank = 2;
  CHECK_THROWS_AS(wb::Loader(data, moco_views(8), o), std::invalid_argument);
}
