// Data set readers (IDX, CIFAR, image folders), image codecs and their error messages.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>

#include "data/codec.h"
#include "data/datasets.h"
#include "test_data_files.h"
#include "test_data_helpers.h"
#include "workbench/draw.h"

using wbtest::TempDir;
namespace fs = std::filesystem;

namespace {

using wbtest::Bytes;
using wbtest::idx_images;
using wbtest::idx_labels;
using wbtest::write_gz;
using wbtest::write_raw;

doctest::Contains has(const std::string& text) {
  return doctest::Contains(text.c_str());
}

wb::Params data_params(const std::string& dataset, const std::string& path) {
  wb::Params p("data");
  p.set("dataset", dataset);
  p.set("path", path);
  return p;
}

wb::Image pattern(std::int64_t h, std::int64_t w, int seed) {
  wb::Image img;
  img.channels = 3;
  img.height = h;
  img.width = w;
  img.pixels.resize(3 * h * w);
  for (std::int64_t y = 0; y < h; ++y)
    for (std::int64_t x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        img.pixels[(y * w + x) * 3 + c] =
            static_cast<std::uint8_t>((x * 8 + y * 3 * (c + 1) + seed * 40) % 256);
  return img;
}

}  // namespace

TEST_CASE("IDX round trip from small files, gzip and raw") {
  TempDir dir;
  const std::vector<std::uint8_t> labels = {0, 1, 2, 1, 0};
  const Bytes images = idx_images(5, 4, 4);
  fs::create_directories(dir.path() / "raw");
  fs::create_directories(dir.path() / "gz");
  write_raw(dir.file("raw/train-images-idx3-ubyte"), images);
  write_raw(dir.file("raw/train-labels-idx1-ubyte"), idx_labels(labels));
  write_gz(dir.file("gz/train-images-idx3-ubyte.gz"), images);
  write_gz(dir.file("gz/train-labels-idx1-ubyte.gz"), idx_labels(labels));
  for (const char* kind : {"raw", "gz"}) {
    CAPTURE(kind);
    auto d = wb::open_dataset(data_params("idx", dir.file(kind)), wb::Split::Train);
    REQUIRE(d->size() == 5);
    CHECK(d->classes() == 3);
    CHECK(d->channels() == 1);
    CHECK(d->image_size() == 4);
    CHECK(d->describe() == "idx train (5 images, 3 classes)");
    for (std::int64_t i = 0; i < 5; ++i) {
      CHECK(d->label(i) == labels[i]);
      const wb::Image img = d->image(i);
      REQUIRE(img.pixels.size() == 16);
      for (int p = 0; p < 16; ++p) CHECK(img.pixels[p] == images[16 + i * 16 + p]);
    }
  }
  // Resize on load: 4 -> 8, a constant image stays constant.
  wb::Params p = data_params("idx", dir.file("gz"));
  p.set("image_size", std::int64_t{8});
  auto big = wb::open_dataset(p, wb::Split::Train);
  CHECK(big->image_size() == 8);
  CHECK(big->image(0).pixels.size() == 64);
}

TEST_CASE("IDX errors name the file and what is wrong") {
  TempDir dir;
  const std::string img = dir.file("images-idx3-ubyte"), lab = dir.file("labels-idx1-ubyte");
  write_raw(lab, idx_labels({0, 1, 2}));
  SUBCASE("truncated") {
    Bytes b = idx_images(3, 4, 4);
    b.resize(b.size() - 5);
    write_gz(img, b);
    CHECK_THROWS_WITH_AS(wb::data::load_idx(img, lab, "t", 0, {}),
                         has(img + ": truncated: the header announces 3 x 4 x 4 = 48 "
                                   "bytes of data, the file holds 43"),
                         std::runtime_error);
  }
  SUBCASE("wrong magic number") {
    write_raw(img, idx_images(3, 4, 4, 0x801));
    CHECK_THROWS_WITH_AS(wb::data::load_idx(img, lab, "t", 0, {}),
                         has(img + ": wrong magic number 0x00000801 (expected 0x00000803"),
                         std::runtime_error);
  }
  SUBCASE("image and label counts differ") {
    write_raw(img, idx_images(4, 4, 4));
    CHECK_THROWS_WITH_AS(wb::data::load_idx(img, lab, "t", 0, {}),
                         has(img + " holds 4 images but " + lab + " holds 3 labels"),
                         std::runtime_error);
  }
  SUBCASE("missing file") {
    CHECK_THROWS_WITH_AS(wb::data::load_idx(dir.file("nope.gz"), lab, "t", 0, {}),
                         has(dir.file("nope.gz") + ": cannot open"), std::runtime_error);
  }
  SUBCASE("header cut short") {
    write_raw(img, Bytes{0, 0, 8, 3, 0, 0});
    CHECK_THROWS_WITH_AS(wb::data::load_idx(img, lab, "t", 0, {}),
                         has(img + ": truncated: the header ends"), std::runtime_error);
  }
}

TEST_CASE("PNG and JPEG round trips, garbage and truncated files give errors naming them") {
  TempDir dir;
  const wb::Image img = pattern(12, 20, 1);
  wb::write_png(dir.file("a.png"), img);
  const wb::Image png = wb::data::decode_image_file(dir.file("a.png"));
  CHECK(png.width == 20);
  CHECK(png.height == 12);
  CHECK(png.pixels == img.pixels);
  wb::data::write_jpeg(dir.file("a.jpg"), img, 95);
  const wb::Image jpg = wb::data::decode_image_file(dir.file("a.jpg"));
  REQUIRE(jpg.pixels.size() == img.pixels.size());
  double err = 0;
  for (std::size_t i = 0; i < img.pixels.size(); ++i)
    err += std::abs(int(jpg.pixels[i]) - int(img.pixels[i]));
  CHECK(err / static_cast<double>(img.pixels.size()) < 4.0);
  // DCT scaling: a 64 x 64 JPEG decoded for 16 px comes out at 16 (2/8), for 17 px at 24 (3/8:
  // the smallest N/8 not under 17), for 8 px at 8 (1/8), for 57 px at full size.
  wb::data::write_jpeg(dir.file("big.jpg"), pattern(64, 64, 2));
  CHECK(wb::data::decode_image_file(dir.file("big.jpg"), 16).width == 16);
  CHECK(wb::data::decode_image_file(dir.file("big.jpg"), 17).width == 24);
  CHECK(wb::data::decode_image_file(dir.file("big.jpg"), 8).width == 8);
  CHECK(wb::data::decode_image_file(dir.file("big.jpg"), 57).width == 64);

  write_raw(dir.file("garbage.jpg"), Bytes{0xFF, 0xD8, 0xFF, 0x00, 1, 2, 3, 4, 5, 6, 7, 8});
  CHECK_THROWS_WITH_AS(wb::data::decode_image_file(dir.file("garbage.jpg")),
                       has(dir.file("garbage.jpg") + ": corrupt JPEG"), std::runtime_error);
  write_raw(dir.file("text.jpg"), Bytes{'h', 'e', 'l', 'l', 'o'});
  CHECK_THROWS_WITH_AS(wb::data::decode_image_file(dir.file("text.jpg")),
                       has(dir.file("text.jpg") + ": not a JPEG or PNG image"), std::runtime_error);
  Bytes half = wb::data::read_file(dir.file("big.jpg"));
  half.resize(half.size() / 2);
  write_raw(dir.file("half.jpg"), half);
  CHECK_THROWS_WITH_AS(wb::data::decode_image_file(dir.file("half.jpg")),
                       has(dir.file("half.jpg") + ": corrupt JPEG: Premature end"),
                       std::runtime_error);
  Bytes bad_png = wb::data::read_file(dir.file("a.png"));
  for (std::size_t i = 40; i < bad_png.size(); ++i) bad_png[i] ^= 0x5A;
  write_raw(dir.file("bad.png"), bad_png);
  CHECK_THROWS_WITH_AS(wb::data::decode_image_file(dir.file("bad.png")),
                       has(dir.file("bad.png") + ": corrupt PNG"), std::runtime_error);
}

TEST_CASE("image folder: classes sorted by name, images resized to squares, lazy errors") {
  TempDir dir;
  fs::create_directories(dir.path() / "train" / "zebra");
  fs::create_directories(dir.path() / "train" / "ant");
  fs::create_directories(dir.path() / "test" / "ant");
  wb::write_png(dir.file("train/zebra/1.png"), pattern(10, 20, 0));
  wb::data::write_jpeg(dir.file("train/zebra/0.JPG"), pattern(16, 16, 1));
  wb::write_png(dir.file("train/ant/x.png"), pattern(8, 8, 2));
  write_raw(dir.file("train/ant/notes.txt"), Bytes{'x'});
  write_raw(dir.file("test/ant/broken.jpeg"), Bytes{0xFF, 0xD8, 0xFF, 0xE0, 0, 0});
  wb::Params p = data_params("folder", dir.path().string());
  p.set("image_size", std::int64_t{8});
  auto train = wb::open_dataset(p, wb::Split::Train);
  REQUIRE(train->size() == 3);
  CHECK(train->classes() == 2);
  CHECK(train->channels() == 3);
  CHECK(train->label(0) == 0);  // ant
  CHECK(train->label(1) == 1);  // zebra/0.JPG
  CHECK(train->label(2) == 1);
  const wb::Image ant = train->image(0);  // already 8 x 8: unchanged
  CHECK(ant.pixels == pattern(8, 8, 2).pixels);
  const wb::Image wide = train->image(2);  // 20 x 10 -> central 10 x 10 -> 8 x 8
  CHECK(wide.width == 8);
  CHECK(wide.height == 8);
  auto named = std::dynamic_pointer_cast<const wb::data::NamedDataset>(train);
  REQUIRE(named);
  CHECK(named->class_names() == std::vector<std::string>{"ant", "zebra"});
  auto test = wb::open_dataset(p, wb::Split::Test);
  REQUIRE(test->size() == 1);
  CHECK_THROWS_WITH_AS(test->image(0), has("broken.jpeg: corrupt JPEG"), std::runtime_error);
  CHECK_THROWS_WITH_AS(
      wb::open_dataset(data_params("folder", dir.file("nothing")), wb::Split::Train),
      has("nothing"), std::exception);
}

TEST_CASE("CIFAR-10 and CIFAR-100 binary batches") {
  TempDir dir;
  auto record = [](std::vector<std::uint8_t> labels, std::uint8_t r, std::uint8_t g,
                   std::uint8_t b) {
    Bytes rec = labels;
    for (std::uint8_t v : {r, g, b}) rec.insert(rec.end(), 1024, v);
    return rec;
  };
  for (int f = 1; f <= 5; ++f) {
    Bytes b = record({static_cast<std::uint8_t>(f)}, 10, 20, 30);
    Bytes b2 = record({0}, static_cast<std::uint8_t>(f), 0, 255);
    b.insert(b.end(), b2.begin(), b2.end());
    write_raw(dir.file("data_batch_" + std::to_string(f) + ".bin"), b);
  }
  write_raw(dir.file("test_batch.bin"), record({9}, 1, 2, 3));
  auto train = wb::open_dataset(data_params("cifar10", dir.path().string()), wb::Split::Train);
  REQUIRE(train->size() == 10);
  CHECK(train->channels() == 3);
  CHECK(train->image_size() == 32);
  CHECK(train->label(0) == 1);
  CHECK(train->label(8) == 5);
  const wb::Image im = train->image(0);
  CHECK(im.pixels[0] == 10);  // interleaved: R G B of pixel 0, then pixel 1
  CHECK(im.pixels[1] == 20);
  CHECK(im.pixels[2] == 30);
  CHECK(im.pixels[3] == 10);
  CHECK(train->pixel_mean()[0] == doctest::Approx(0.4914));
  auto test = wb::open_dataset(data_params("cifar10", dir.path().string()), wb::Split::Test);
  CHECK(test->size() == 1);
  CHECK(test->label(0) == 9);

  write_raw(dir.file("train.bin"), record({3, 77}, 5, 6, 7));
  auto c100 = wb::open_dataset(data_params("cifar100", dir.path().string()), wb::Split::Train);
  CHECK(c100->label(0) == 77);  // the fine label

  Bytes cut = record({1}, 0, 0, 0);
  cut.pop_back();
  write_raw(dir.file("test_batch.bin"), cut);
  CHECK_THROWS_WITH_AS(
      wb::open_dataset(data_params("cifar10", dir.path().string()), wb::Split::Test),
      has("test_batch.bin: truncated"), std::runtime_error);
  CHECK_THROWS_WITH_AS(wb::open_dataset(data_params("cifar10", dir.file("none")), wb::Split::Test),
                       has("test_batch.bin: cannot open"), std::runtime_error);
  CHECK_THROWS_WITH_AS(wb::open_dataset(data_params("mnist3d", ""), wb::Split::Test),
                       has("unknown data set 'mnist3d'"), std::invalid_argument);
}

TEST_CASE("Fashion-MNIST is the default data set, with its statistics and splits") {
  wb::Params p("data");
  auto test = wb::open_dataset(p, wb::Split::Test);
  CHECK(test->describe() == "fashion_mnist test (10000 images, 10 classes)");
  CHECK(test->channels() == 1);
  CHECK(test->image_size() == 28);
  CHECK(test->label(0) == 9);  // the first test image is an ankle boot
  CHECK(test->image(0).pixels.size() == 784);
  CHECK(test->pixel_mean() == std::vector<double>{0.2860});
  CHECK(test->pixel_std() == std::vector<double>{0.3530});
  p.set("val_fraction", 0.1);
  p.set("label_fraction", 0.01);
  auto train = wb::open_dataset(p, wb::Split::Train);
  auto val = wb::open_dataset(p, wb::Split::Val);
  CHECK(val->size() == 6000);   // 600 of each class's 6000
  CHECK(train->size() == 540);  // 1 % of the remaining 5400 per class
}
