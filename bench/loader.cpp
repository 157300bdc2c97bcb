// `workbench bench loader`: how many images per second the loader turns into two MoCo views
// (moco1 + moco2), per worker thread, for Fashion-MNIST (28 px, in memory) and for an image
// folder of 224 x 224 JPEGs that the benchmark writes itself. Also times the single-thread
// parts (decode + resize, augmentation) so the per-worker figure can be explained.
#include <ATen/ATen.h>

#include <boost/program_options.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <unistd.h>

#include "common.h"
#include "data/codec.h"
#include "data/datasets.h"
#include "data/view_pipeline.h"
#include "workbench/views.h"

namespace wb::bench {

namespace {

namespace po = boost::program_options;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A 224 x 224 texture: a few random sinusoids per channel plus noise, so the JPEGs have
// realistic sizes (tens of kB) rather than compressing to nothing.
Image texture(std::int64_t side, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  Image img;
  img.channels = 3;
  img.height = img.width = side;
  img.pixels.resize(static_cast<std::size_t>(3 * side * side));
  double fx[3][3], fy[3][3], ph[3][3];
  for (auto c = 0; c < 3; ++c)
    for (int k = 0; k < 3; ++k) {
      fx[c][k] = u(rng) * 0.3;
      fy[c][k] = u(rng) * 0.3;
      ph[c][k] = u(rng) * 6.283;
    }
  for (std::int64_t y = 0; y < side; ++y)
    for (std::int64_t x = 0; x < side; ++x)
      for (int c = 0; c < 3; ++c) {
        double v = 0;
        for (int k = 0; k < 3; ++k) v += std::sin(fx[c][k] * x + fy[c][k] * y + ph[c][k]);
        v = 128 + 35 * v + 30 * (u(rng) - 0.5);
        img.pixels[static_cast<std::size_t>((y * side + x) * 3 + c)] =
            static_cast<std::uint8_t>(std::clamp(v, 0.0, 255.0));
      }
  return img;
}

void write_jpeg_folder(const fs::path& root, std::int64_t images, std::int64_t side) {
  std::mt19937_64 rng(1234);
  for (std::int64_t i = 0; i < images; ++i) {
    const fs::path dir = root / ("class" + std::to_string(i % 4));
    fs::create_directories(dir);
    data::write_jpeg((dir / (std::to_string(i) + ".jpg")).string(), texture(side, rng), 90);
  }
}

struct Result {
  double images_per_s = 0;
  std::int64_t images = 0;
  double seconds = 0;
};

// Runs whole epochs until at least `min_seconds` have passed (after one warm-up batch).
Result run_loader(const std::shared_ptr<const Dataset>& data, int workers, std::int64_t batch,
                  double min_seconds) {
  LoaderOptions o;
  o.batch_size = batch;
  o.workers = workers;
  o.prefetch = 4;
  o.drop_last = true;
  Loader loader(data, {view_preset("moco1"), view_preset("moco2")}, o);
  if (loader.batches_per_epoch() < 2)
    throw std::invalid_argument(data->describe() + " has fewer than two batches of " +
                                std::to_string(batch) + ": lower --batch or raise --images");
  loader.start_epoch(0);
  (void)loader.next();  // warm-up: threads started, caches hot
  Result r;
  const auto t0 = Clock::now();
  for (std::int64_t epoch = 1; r.seconds < min_seconds; ++epoch) {
    loader.start_epoch(epoch);
    while (auto b = loader.next()) {
      r.images += b->size();
      r.seconds = seconds_since(t0);
      if (r.seconds >= min_seconds) break;
    }
  }
  r.images_per_s = static_cast<double>(r.images) / r.seconds;
  return r;
}

// How much parallel CPU the machine gives right now: work done per second by n threads of
// a fixed busy loop, relative to one. On a shared 2-core box this is often well below 2, and
// the loader's 2-worker figures must be read against it.
double parallel_capacity(int n, int repeats) {
  auto spin = [] {
    volatile double x = 0;
    for (int i = 0; i < 20000000; ++i) x = x + 1e-9 * i;
  };
  double one = 1e30, many = 1e30;  // best times: load from elsewhere only slows things down
  for (int k = 0; k < std::max(1, repeats); ++k) {
    auto t0 = Clock::now();
    spin();
    one = std::min(one, seconds_since(t0));
    t0 = Clock::now();
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) threads.emplace_back(spin);
    for (auto& t : threads) t.join();
    many = std::min(many, seconds_since(t0));
  }
  return n * one / many;
}

// Single-thread parts: reading items (decode + resize for folders) and making two views.
std::pair<double, double> parts_per_s(const Dataset& data, std::int64_t count) {
  const std::vector<ViewRecipe> recipes = {data::resolve_recipe(view_preset("moco1"), data),
                                           data::resolve_recipe(view_preset("moco2"), data)};
  count = std::min(count, data.size());
  std::vector<Image> images;
  auto t0 = Clock::now();
  for (std::int64_t i = 0; i < count; ++i) images.push_back(data.image(i));
  const double read = static_cast<double>(count) / seconds_since(t0);
  const std::int64_t S = recipes[0].size, C = data.channels();
  std::vector<float> out(static_cast<std::size_t>(C * S * S));
  t0 = Clock::now();
  for (std::int64_t i = 0; i < count; ++i)
    for (std::int64_t v = 0; v < 2; ++v) {
      std::mt19937_64 rng(data::view_seed(0, 0, i, v));
      data::make_view(images[i], recipes[v], rng, out.data());
    }
  return {read, static_cast<double>(count) / seconds_since(t0)};
}

}  // namespace

int bench_loader(const Args& args) {
  po::options_description opts("workbench bench loader [options]");
  std::int64_t images = 512, batch = 64, side = 224, fmnist_limit = 20000;
  double seconds = 2.0;
  int repeats = 5;
  std::vector<int> workers_list;
  std::string dir;
  opts.add_options()("help,h", "show this help")(
      "images", po::value(&images), "JPEGs to write for the folder benchmark (default 512)")(
      "side", po::value(&side), "their side in pixels (default 224)")("batch", po::value(&batch),
                                                                      "batch size (default 64)")(
      "workers", po::value(&workers_list)->multitoken(), "worker counts (default 1 2)")(
      "seconds", po::value(&seconds), "minimum timed seconds per measurement (default 2)")(
      "repeats", po::value(&repeats), "measurements per figure, the best is kept (default 5)")(
      "fmnist-limit", po::value(&fmnist_limit),
      "Fashion-MNIST training images used (default 20000)")(
      "dir", po::value(&dir), "folder for the JPEGs (default: a temporary one, removed after)")(
      "skip-fmnist", "only the JPEG folder")("skip-folder", "only Fashion-MNIST");
  po::variables_map vm;
  if (!parse_options(opts, args, &vm)) return 0;
  if (workers_list.empty()) workers_list = {1, 2};

  std::vector<std::pair<std::string, std::shared_ptr<const Dataset>>> sets;
  if (!vm.count("skip-fmnist")) {
    Params p("bench");
    p.set("train_limit", fmnist_limit);
    sets.emplace_back("Fashion-MNIST 28 px", open_dataset(p, Split::Train));
  }
  const bool temp_dir = dir.empty();
  if (temp_dir)
    dir = (fs::temp_directory_path() / ("wb_bench_loader_" + std::to_string(::getpid()))).string();
  if (!vm.count("skip-folder")) {
    const auto t0 = Clock::now();
    write_jpeg_folder(dir, images, side);
    std::uintmax_t bytes = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir))
      if (e.is_regular_file()) bytes += e.file_size();
    std::printf("wrote %lld JPEGs of %lldx%lld (%.1f kB each) in %.1f s to %s\n",
                static_cast<long long>(images), static_cast<long long>(side),
                static_cast<long long>(side), bytes / 1024.0 / static_cast<double>(images),
                seconds_since(t0), dir.c_str());
    sets.emplace_back(std::to_string(side) + " px JPEG folder",
                      data::open_folder(dir, "bench folder", side));
  }

  int max_workers = 1;
  for (int w : workers_list) max_workers = std::max(max_workers, w);
  if (max_workers > 1)
    std::printf("\nCPU check: %d threads of a busy loop ran %.2fx one thread\n", max_workers,
                parallel_capacity(max_workers, repeats));
  std::printf("\n| data | workers | images/s | images/s per worker |\n|---|---|---|---|\n");
  std::ostringstream parts;
  for (const auto& [name, data] : sets) {
    for (int w : workers_list) {
      Result r;  // best of `repeats`: other load on the machine only ever slows a run down
      for (int k = 0; k < std::max(1, repeats); ++k) {
        const Result one = run_loader(data, w, batch, seconds);
        if (one.images_per_s > r.images_per_s) r = one;
      }
      std::printf("| %s | %d | %.0f | %.0f |\n", name.c_str(), w, r.images_per_s,
                  r.images_per_s / w);
      std::fflush(stdout);
    }
    double read = 0, views = 0;
    for (int k = 0; k < std::max(1, repeats); ++k) {
      const auto [a, b] = parts_per_s(*data, std::min<std::int64_t>(data->size(), 2000));
      read = std::max(read, a);
      views = std::max(views, b);
    }
    char line[256];
    std::snprintf(line, sizeof line, "| %s | %.0f | %.0f |\n", name.c_str(), read, views);
    parts << line;
  }
  std::printf(
      "\nsingle thread, per image:\n| data | items read/s (decode + resize) | two views/s "
      "(augmentation) |\n|---|---|---|\n%s",
      parts.str().c_str());
  if (temp_dir && !vm.count("skip-folder")) fs::remove_all(dir);
  return 0;
}

}  // namespace wb::bench
