// wb::Loader: worker threads decode and augment whole batches ahead of the trainer into a
// bounded set of slots; batches are handed out in order. A batch's content depends only on
// (seed, epoch, batch index): the order comes from (seed, epoch), each view's RNG from
// (seed, epoch, position, view), so the number of workers changes only the speed, and the
// number of ranks only which slice of the global batch this process builds.
#include <ATen/ATen.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <map>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <thread>

#include "data/rng.h"
#include "data/view_pipeline.h"
#include "workbench/stop.h"
#include "workbench/views.h"

namespace wb {

namespace {

// Recycles the memory of the view tensors. A fresh 224-px batch is tens of MB that the kernel
// must map and zero page by page on first touch, which cost about a third of a worker's time;
// buffers handed back by the trainer (when it drops a batch) are already mapped. Each tensor's
// deleter returns its buffer here; the pool lives as long as any tensor from it.
class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  explicit BufferPool(std::size_t keep) : keep_(keep) {}
  ~BufferPool() {
    for (auto& [bytes, list] : free_)
      for (void* p : list) std::free(p);
  }

  at::Tensor floats(at::IntArrayRef sizes) {
    std::size_t bytes = sizeof(float);
    for (auto s : sizes) bytes *= static_cast<std::size_t>(s);
    bytes = std::max<std::size_t>((bytes + 63) / 64 * 64, 64);
    void* p = take(bytes);
    if (!p) p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    auto self = shared_from_this();
    return at::from_blob(
        p, sizes, [self, bytes](void* q) { self->give(q, bytes); }, at::kFloat);
  }

 private:
  void* take(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& list = free_[bytes];
    if (list.empty()) return nullptr;
    void* p = list.back();
    list.pop_back();
    return p;
  }
  void give(void* p, std::size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto& list = free_[bytes];
      if (list.size() < keep_) {
        list.push_back(p);
        return;
      }
    }
    std::free(p);
  }

  std::size_t keep_;
  std::mutex mutex_;
  std::map<std::size_t, std::vector<void*>> free_;
};

// The cluster id of every item of a data set that has them (Dataset::cluster), [N] int64.
at::Tensor clusters_of(const Dataset& data) {
  at::Tensor ids = at::empty({data.size()}, at::kLong);
  std::int64_t* id = ids.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < data.size(); ++i) {
    id[i] = data.cluster(i);
    if (id[i] < 0)
      throw std::invalid_argument("Loader: " + data.describe() + " has no cluster id for item " +
                                  std::to_string(i));
  }
  return ids;
}

}  // namespace

struct Loader::Impl {
  std::shared_ptr<const Dataset> data;
  std::vector<ViewRecipe> recipes;  // resolved
  LoaderOptions options;
  // [N] int64 cluster id of every item (Dataset::cluster, MoCE), CPU and contiguous: read
  // through a raw pointer by the workers. Undefined when the data set has none.
  at::Tensor cluster_of;
  std::shared_ptr<BufferPool> pool;

  std::int64_t epoch = -1;  // -1: no epoch started yet
  std::vector<std::int64_t> order;
  std::int64_t batches = 0;

  struct Slot {
    std::optional<Batch> batch;
    std::exception_ptr error;
  };
  std::mutex mutex;
  std::condition_variable work_cv, ready_cv;
  std::int64_t next_claim = 0, next_deliver = 0;
  bool stop = false;
  std::map<std::int64_t, Slot> ready;
  std::vector<std::thread> threads;

  std::int64_t in_flight_limit() const {
    // Every worker gets a batch to work on, even when prefetch is smaller.
    return std::max<std::int64_t>({1, options.prefetch, options.workers});
  }

  Batch build(std::int64_t b) const;
  void worker();
  void stop_workers();
  Slot make_slot(std::int64_t b) const {
    Slot s;
    try {
      s.batch = build(b);
      // Page-locked copies, made on this worker: Batch::to then copies them to the GPU
      // without blocking the trainer.
      if (options.pin_memory) s.batch = s.batch->pinned();
    } catch (...) {
      s.error = std::current_exception();
    }
    return s;
  }
};

Batch Loader::Impl::build(std::int64_t b) const {
  const std::int64_t B = options.batch_size;
  // The global batch b holds positions [b B, b B + global); this rank's slice of it:
  const std::int64_t global =
      std::min<std::int64_t>(B, static_cast<std::int64_t>(order.size()) - b * B);
  const std::int64_t start = b * B + global * options.rank / options.world;
  const std::int64_t n = b * B + global * (options.rank + 1) / options.world - start;
  const std::int64_t C = data->channels();
  // Tensors are allocated here and filled through raw pointers: no ATen operator runs on
  // these threads, so they never compete with the trainer's intra-op thread pool.
  Batch batch;
  std::vector<float*> view_ptr, box_ptr;
  std::vector<bool*> flip_ptr;
  for (const auto& r : recipes) {
    batch.views.push_back(pool->floats({n, C, r.size, r.size}));
    ViewGeometry g{at::empty({n, 4}, at::kFloat), at::empty({n}, at::kBool)};
    view_ptr.push_back(batch.views.back().data_ptr<float>());
    box_ptr.push_back(g.box.data_ptr<float>());
    flip_ptr.push_back(g.flip.data_ptr<bool>());
    batch.geometry.push_back(std::move(g));
  }
  batch.labels = at::empty({n}, at::kLong);
  batch.index = at::empty({n}, at::kLong);
  auto* labels = batch.labels.data_ptr<std::int64_t>();
  auto* index = batch.index.data_ptr<std::int64_t>();
  const std::int64_t* cluster_ids = nullptr;
  std::int64_t* cluster = nullptr;
  if (cluster_of.defined()) {
    batch.cluster = at::empty({n}, at::kLong);
    cluster = batch.cluster.data_ptr<std::int64_t>();
    cluster_ids = cluster_of.data_ptr<std::int64_t>();
  }
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t position = start + i;
    const std::int64_t item = order[position];
    const Image image = data->image(item);
    if (image.channels != C)
      throw std::runtime_error(data->describe() + ": item " + std::to_string(item) + " has " +
                               std::to_string(image.channels) + " channels, expected " +
                               std::to_string(C));
    labels[i] = data->label(item);
    index[i] = item;
    if (cluster) cluster[i] = cluster_ids[item];
    for (std::size_t v = 0; v < recipes.size(); ++v) {
      const std::int64_t S = recipes[v].size;
      std::mt19937_64 rng(
          data::view_seed(options.seed, epoch, position, static_cast<std::int64_t>(v)));
      const data::ViewBox box =
          data::make_view(image, recipes[v], rng, view_ptr[v] + i * C * S * S);
      float* bx = box_ptr[v] + i * 4;
      bx[0] = box.x, bx[1] = box.y, bx[2] = box.w, bx[3] = box.h;
      flip_ptr[v][i] = box.flip;
    }
  }
  return batch;
}

void Loader::Impl::worker() {
  std::unique_lock<std::mutex> lock(mutex);
  while (true) {
    work_cv.wait(lock, [&] {
      return stop || (next_claim < batches && next_claim < next_deliver + in_flight_limit());
    });
    if (stop) return;
    const std::int64_t b = next_claim++;
    lock.unlock();
    Slot slot = make_slot(b);
    lock.lock();
    ready[b] = std::move(slot);
    ready_cv.notify_all();
  }
}

void Loader::Impl::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stop = true;
  }
  work_cv.notify_all();
  for (auto& t : threads) t.join();
  threads.clear();
  stop = false;
  ready.clear();
}

Loader::Loader(std::shared_ptr<const Dataset> data, std::vector<ViewRecipe> views,
               LoaderOptions options)
    : impl_(std::make_unique<Impl>()) {
  if (!data) throw std::invalid_argument("Loader: no data set");
  if (views.empty()) throw std::invalid_argument("Loader: needs at least one view recipe");
  if (options.batch_size <= 0) throw std::invalid_argument("Loader: batch_size must be > 0");
  if (options.workers < 0) throw std::invalid_argument("Loader: workers must be >= 0");
  if (options.world < 1 || options.rank < 0 || options.rank >= options.world)
    throw std::invalid_argument("Loader: rank must lie in [0, world)");
  for (auto& r : views) impl_->recipes.push_back(data::resolve_recipe(std::move(r), *data));
  if (data->has_clusters()) impl_->cluster_of = clusters_of(*data);
  impl_->data = std::move(data);
  impl_->options = options;
  // Batches in flight, plus a few held by the trainer, for each view.
  impl_->pool = std::make_shared<BufferPool>(
      static_cast<std::size_t>(impl_->in_flight_limit() + 3) * impl_->recipes.size());
}

Loader::~Loader() {
  impl_->stop_workers();
}

std::int64_t Loader::batches_per_epoch() const {
  const std::int64_t n = impl_->data->size(), B = impl_->options.batch_size;
  return impl_->options.drop_last ? n / B : (n + B - 1) / B;
}

const Dataset& Loader::dataset() const {
  return *impl_->data;
}

void Loader::start_epoch(std::int64_t epoch) {
  Impl& s = *impl_;
  s.stop_workers();
  s.epoch = epoch;
  s.order.resize(static_cast<std::size_t>(s.data->size()));
  std::iota(s.order.begin(), s.order.end(), std::int64_t{0});
  if (s.options.shuffle) {
    std::mt19937_64 rng(
        data::combine_seed(s.options.seed ^ 0x5A4FF1E, static_cast<std::uint64_t>(epoch)));
    data::shuffle(s.order, rng);
  }
  s.batches = batches_per_epoch();
  s.next_claim = s.next_deliver = 0;
  for (int w = 0; w < s.options.workers; ++w) s.threads.emplace_back([&s] { s.worker(); });
}

std::optional<Batch> Loader::next() {
  Impl& s = *impl_;
  if (s.options.interruptible && stop_requested())
    throw Interrupted("interrupted: reading " + s.data->describe());
  if (s.epoch < 0) start_epoch(0);
  std::unique_lock<std::mutex> lock(s.mutex);
  if (s.next_deliver >= s.batches) return std::nullopt;
  const std::int64_t b = s.next_deliver;
  Impl::Slot slot;
  if (s.options.workers == 0) {
    lock.unlock();  // no threads: build here
    slot = s.make_slot(b);
    lock.lock();
  } else {
    s.ready_cv.wait(lock, [&] { return s.ready.count(b) != 0; });
    slot = std::move(s.ready[b]);
    s.ready.erase(b);
  }
  ++s.next_deliver;
  lock.unlock();
  s.work_cv.notify_all();
  if (slot.error) std::rethrow_exception(slot.error);
  return std::move(slot.batch);
}

}  // namespace wb
