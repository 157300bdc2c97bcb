// Data files that lie: headers announcing more than the file holds, dimension products that
// overflow, labels outside the class count, images of the wrong size or kind. Each is refused
// with an error naming the file, and before any allocation the lie would cause.
#include <doctest/doctest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <new>

#include "data/codec.h"
#include "data/datasets.h"
#include "data/image_ops.h"
#include "test_data_files.h"
#include "test_data_helpers.h"
#include "workbench/draw.h"

using namespace wbtest;
namespace fs = std::filesystem;

namespace {

doctest::Contains has(const std::string& text) {
  return doctest::Contains(text.c_str());
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

wb::Params data_params(const std::string& dataset, const std::string& path) {
  wb::Params p("data");
  p.set("dataset", dataset);
  p.set("path", path);
  return p;
}

std::string corpus(const std::string& name) {
  return std::string(WB_SOURCE_DIR) + "/fuzz/corpus/" + name;
}

// Every pixel of fuzz/corpus/image/large_8200x12296.jpg (96 = 128 - 2 x 16: its DC coefficient
// is a multiple of the quantisation step, so the grey comes back exactly).
constexpr std::uint8_t kLargeGrey = 96;

// A fuzz seed of the image target without its leading min_side byte: an image file.
Bytes corpus_image(const std::string& name) {
  Bytes b = wb::data::read_file(corpus("image/" + name));
  b.erase(b.begin());
  return b;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

// Runs `cases` in a child process whose address space may grow by at most `headroom` bytes:
// an allocation the size a lying header announces fails there with std::bad_alloc. Each case
// returns its error message; the child exits with the number of the first case whose message
// lacks its expected part (printing both), 0 when all match.
struct Case {
  std::function<std::string()> run;
  std::string expected;
};

int run_with_bounded_memory(std::size_t headroom, const std::vector<Case>& cases) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::size_t vm_kb = 0;
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind("VmSize:", 0) == 0) vm_kb = std::stoull(line.substr(7));
    const rlim_t limit = vm_kb * 1024 + headroom;
    const rlimit r{limit, limit};
    if (vm_kb == 0 || ::setrlimit(RLIMIT_AS, &r) != 0) ::_exit(100);
    for (std::size_t i = 0; i < cases.size(); ++i) {
      std::string what;
      try {
        what = cases[i].run();
      } catch (const std::bad_alloc&) {
        what = "std::bad_alloc: the reader allocated what the header announced";
      }
      if (what.find(cases[i].expected) == std::string::npos) {
        std::fprintf(stderr, "case %zu: expected '%s', got '%s'\n", i + 1,
                     cases[i].expected.c_str(), what.c_str());
        ::_exit(static_cast<int>(i + 1));
      }
    }
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// A minimal PNG: signature, IHDR, one IDAT holding `rows` (filter bytes included), IEND.
Bytes png_file(std::uint32_t width, std::uint32_t height, std::uint8_t depth, std::uint8_t type,
               const Bytes& rows) {
  Bytes out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  auto chunk = [&](const char* tag, const Bytes& data) {
    put32(out, static_cast<std::uint32_t>(data.size()));
    Bytes body(tag, tag + 4);
    body.insert(body.end(), data.begin(), data.end());
    out.insert(out.end(), body.begin(), body.end());
    put32(out, static_cast<std::uint32_t>(crc32(0, body.data(), static_cast<uInt>(body.size()))));
  };
  Bytes ihdr;
  put32(ihdr, width);
  put32(ihdr, height);
  ihdr.insert(ihdr.end(), {depth, type, 0, 0, 0});
  chunk("IHDR", ihdr);
  Bytes z(compressBound(static_cast<uLong>(rows.size())));
  uLongf zsize = static_cast<uLongf>(z.size());
  REQUIRE(compress(z.data(), &zsize, rows.data(), static_cast<uLong>(rows.size())) == Z_OK);
  z.resize(zsize);
  chunk("IDAT", z);
  chunk("IEND", {});
  return out;
}

// A real JPEG whose frame header (SOF0) claims width x height.
Bytes jpeg_claiming(const TempDir& dir, std::uint16_t width, std::uint16_t height) {
  wb::Image img;
  img.channels = 3;
  img.height = img.width = 16;
  img.pixels.assign(16 * 16 * 3, 128);
  wb::data::write_jpeg(dir.file("small.jpg"), img);
  Bytes b = wb::data::read_file(dir.file("small.jpg"));
  for (std::size_t i = 0; i + 8 < b.size(); ++i)
    if (b[i] == 0xFF && b[i + 1] == 0xC0) {
      b[i + 5] = static_cast<std::uint8_t>(height >> 8);
      b[i + 6] = static_cast<std::uint8_t>(height);
      b[i + 7] = static_cast<std::uint8_t>(width >> 8);
      b[i + 8] = static_cast<std::uint8_t>(width);
      return b;
    }
  FAIL("no SOF0 marker in the JPEG written");
  return b;
}

wb::Image solid(std::int64_t h, std::int64_t w, std::uint8_t v) {
  wb::Image img;
  img.channels = 3;
  img.height = h;
  img.width = w;
  img.pixels.assign(static_cast<std::size_t>(h * w * 3), v);
  return img;
}

}  // namespace

TEST_CASE("lying headers are refused before the allocation they announce (bounded memory)") {
  TempDir dir;
  // 3826531 x 28 x 28 = 3000000304 bytes: a 16-byte file claiming 3 GB.
  const std::uint32_t n = 3826531;
  const Bytes header = idx_images(n, 28, 28, 0x803, false);
  REQUIRE(header.size() == 16);
  write_raw(dir.file("lie-images"), header);
  write_gz(dir.file("lie-images.gz"), header);
  write_raw(dir.file("labels"), idx_labels(std::vector<std::uint8_t>(n, 0)));  // honest
  Bytes label_header;
  put32(label_header, 0x801);
  put32(label_header, n);
  write_raw(dir.file("lie-labels"), label_header);
  // A gzip bomb's cousin: 32 MB of zeros (a 32 kB file) under a header claiming 3 GB. The
  // buffer may grow to what the file really holds, not to what the header says.
  Bytes bomb = header;
  bomb.resize(bomb.size() + (32u << 20), 0);
  write_gz(dir.file("bomb.gz"), bomb);
  bomb = {};
  const Bytes wide_jpeg = jpeg_claiming(dir, 65500, 65500);
  // 10000 x 10000 grey pixels need at least 10000 x 10001 / 1032 -> 96909 bytes of deflate data.
  const Bytes tall_png = png_file(10000, 10000, 8, 0, Bytes(10001, 0));
  const Bytes huge_png = png_file(100000, 100000, 1, 0, Bytes(12501, 0));
  // Under the header limit, over what one decode may give (2^26 pixels): 9000 x 9000.
  const Bytes nine_jpeg = jpeg_claiming(dir, 9000, 9000);
  // 9000 rows of 1 + 1125 bytes need 9820 bytes of deflate data: incompressible bytes give that.
  Bytes noise(10001);
  std::uint32_t state = 1;
  for (auto& b : noise)
    b = static_cast<std::uint8_t>((state = state * 1664525u + 1013904223u) >> 24);
  const Bytes nine_png = png_file(9000, 9000, 1, 0, noise);

  auto idx = [&](const std::string& images, const std::string& labels) {
    return [&dir, images, labels] {
      return message_of(
          [&] { wb::data::load_idx(dir.file(images), dir.file(labels), "t", 0, {}); });
    };
  };
  auto image = [](const Bytes& b, const std::string& name) {
    return [&b, name] {
      return message_of([&] { wb::data::decode_image(b.data(), b.size(), name); });
    };
  };
  const std::string announce = "the header announces 3826531 x 28 x 28 = 3000000304 bytes of data";
  const int failed = run_with_bounded_memory(
      std::size_t{256} << 20,
      {
          {idx("lie-images", "labels"),
           dir.file("lie-images") + ": truncated: " + announce + ", the file holds 0"},
          {idx("lie-images.gz", "labels"), dir.file("lie-images.gz") + ": truncated: " + announce +
                                               ", the file holds 0 after decompression"},
          {idx("bomb.gz", "labels"), dir.file("bomb.gz") + ": truncated: " + announce +
                                         ", the file holds 33554432 after decompression"},
          {idx("lie-images", "lie-labels"),
           dir.file("lie-labels") + ": truncated: the header announces 3826531 = 3826531 bytes "
                                    "of data, the file holds 0"},
          {image(wide_jpeg, "wide.jpg"),
           "wide.jpg: JPEG of 65500 x 65500 pixels, more than the 178956970 accepted"},
          {image(tall_png, "tall.png"),
           "tall.png: truncated PNG: 10000 x 10000 pixels need at least 96909 bytes of "
           "compressed data, the file has " +
               std::to_string(tall_png.size())},
          {image(huge_png, "huge.png"),
           "huge.png: PNG of 100000 x 100000 pixels, more than the 178956970 accepted"},
          {image(nine_jpeg, "nine.jpg"),
           "nine.jpg: JPEG of 9000 x 9000 pixels would decode to 9000 x 9000 = 81000000 pixels, "
           "more than the 67108864 (8192 x 8192) decoded at most; shrink the file, or read it "
           "for a smaller image size"},
          {image(nine_png, "nine.png"),
           "nine.png: PNG of 9000 x 9000 pixels would decode to 9000 x 9000 = 81000000 pixels, "
           "more than the 67108864 (8192 x 8192) decoded at most; shrink the file"},
      });
  CHECK(failed == 0);
}

TEST_CASE("IDX: dimension products that overflow, wrong element types, trailing data") {
  TempDir dir;
  const std::string img = dir.file("images"), lab = dir.file("labels");
  auto load = [&] { return message_of([&] { wb::data::load_idx(img, lab, "t", 0, {}); }); };
  write_raw(lab, idx_labels({0, 1, 2}));
  // 2^20 x 2^22 x 2^22 = 2^64 wraps to 0 in 64 bits.
  write_raw(img, idx_images(1u << 20, 1u << 22, 1u << 22, 0x803, false));
  CHECK(load() == img +
                      ": the header announces 3 dimensions 1048576 x 4194304 x 4194304..., "
                      "whose product overflows 64 bits: not a real file");
  write_raw(img, idx_images(3, 2, 2, 0x0D03));
  CHECK(contains(load(),
                 "wrong magic number 0x00000d03 (expected 0x00000803: idx3 unsigned-byte "
                 "images): element type 0d, only unsigned bytes (08) are read"));
  write_raw(img, idx_images(3, 2, 2, 0x0802));
  CHECK(contains(load(), "2 dimensions, expected 3"));
  write_raw(img, Bytes{'G', 'I', 'F', '8', '9', 'a'});
  CHECK(contains(load(),
                 "wrong magic number 0x47494638 (expected 0x00000803: idx3 unsigned-byte "
                 "images): not an IDX file"));
  Bytes longer = idx_images(3, 2, 2);
  longer.push_back(1);
  write_raw(img, longer);
  CHECK(load() == img +
                      ": the header announces 3 x 2 x 2 = 12 bytes of data, the file holds 13: "
                      "the header or the file is wrong");
  write_gz(img, longer);
  CHECK(load() == img +
                      ": the header announces 3 x 2 x 2 = 12 bytes of data, the file holds "
                      "more: the header or the file is wrong");
  write_raw(img, idx_images(0, 2, 2));
  write_raw(lab, idx_labels({}));
  CHECK(load() == img + ": holds no images");
  fs::remove(img);
  fs::create_directory(img);
  CHECK(load() == img + ": not a regular file");
}

TEST_CASE("IDX labels: checked against the declared class count, or inferred with a check") {
  TempDir dir;
  const std::string img = dir.file("images"), lab = dir.file("labels");
  // Labels 0..9 with one stray byte of 250 at image 13.
  std::vector<std::uint8_t> labels;
  for (int i = 0; i < 20; ++i) labels.push_back(static_cast<std::uint8_t>(i % 10));
  labels[13] = 250;  // class 3 keeps image 3: all of 0..9 stay used
  write_raw(img, idx_images(20, 2, 2));
  write_raw(lab, idx_labels(labels));
  auto load = [&](std::int64_t classes) {
    return message_of([&] { wb::data::load_idx(img, lab, "t", 0, {}, classes); });
  };
  CHECK(load(0) == lab +
                       ": image 13 (byte offset 21) has label 250, so 251 classes would be "
                       "inferred, 240 of them without any image; set data.num_classes to the "
                       "number of classes if the labels are right");
  CHECK(load(10) == lab +
                        ": image 13 (byte offset 21) has label 250, but the data set has 10 "
                        "classes (labels 0..9)");
  // Declared: the count is the declared one, also where the largest class is absent.
  CHECK(wb::data::load_idx(img, lab, "t", 0, {}, 251)->classes() == 251);
  labels[13] = 3;
  write_raw(lab, idx_labels(labels));
  CHECK(wb::data::load_idx(img, lab, "t", 0, {}, 12)->classes() == 12);
  CHECK(wb::data::load_idx(img, lab, "t", 0, {}, 0)->classes() == 10);
  // Inferred: refused only when most classes would be empty. {0, 2}: 3 classes, 1 empty;
  // {0, 5}: 6 classes, 4 empty.
  write_raw(img, idx_images(2, 2, 2));
  write_raw(lab, idx_labels({0, 2}));
  CHECK(wb::data::load_idx(img, lab, "t", 0, {}, 0)->classes() == 3);
  write_raw(lab, idx_labels({5, 0}));
  CHECK(contains(load(0), lab + ": image 0 (byte offset 8) has label 5, so 6 classes would be "
                                "inferred, 4 of them without any image"));
  // Through open_dataset: data.num_classes for idx, and the declared 10 of Fashion-MNIST.
  fs::create_directories(dir.path() / "idx");
  write_raw(dir.file("idx/train-images-idx3-ubyte"), idx_images(2, 2, 2));
  write_raw(dir.file("idx/train-labels-idx1-ubyte"), idx_labels({5, 0}));
  wb::Params p = data_params("idx", dir.file("idx"));
  CHECK_THROWS_WITH_AS(wb::open_dataset(p, wb::Split::Train), has("set data.num_classes"),
                       std::runtime_error);
  p.set("num_classes", std::int64_t{6});
  CHECK(wb::open_dataset(p, wb::Split::Train)->classes() == 6);
  wb::Params fashion("data");
  fashion.set("num_classes", std::int64_t{12});
  CHECK_THROWS_WITH_AS(wb::open_dataset(fashion, wb::Split::Test),
                       "data.num_classes = 12, but fashion_mnist has 10 classes",
                       std::invalid_argument);
}

TEST_CASE("CIFAR: coarse and fine labels, empty and non-regular files, declared class count") {
  TempDir dir;
  auto record = [](std::vector<std::uint8_t> labels) {
    Bytes rec = labels;
    rec.insert(rec.end(), 3072, 7);
    return rec;
  };
  const std::string c10 = dir.file("c10.bin"), c100 = dir.file("c100.bin");
  auto load = [](const std::string& file, bool cifar100) {
    return message_of([&] { wb::data::load_cifar({file}, cifar100, "t", 0, {}); });
  };
  Bytes b = record({1});
  for (std::uint8_t l : {3, 10}) {
    const Bytes r = record({l});
    b.insert(b.end(), r.begin(), r.end());
  }
  write_raw(c10, b);
  CHECK(load(c10, false) == c10 + ": record 2 (byte offset 6146) has label 10, expected < 10");
  b.resize(2 * 3073);
  write_raw(c10, b);
  // Labels 1 and 3 only: still the 10 classes CIFAR-10 declares.
  CHECK(wb::data::load_cifar({c10}, false, "t", 0, {})->classes() == 10);

  b = record({19, 99});
  Bytes r = record({20, 5});
  b.insert(b.end(), r.begin(), r.end());
  write_raw(c100, b);
  CHECK(load(c100, true) ==
        c100 + ": record 1 (byte offset 3074) has coarse label 20, expected < 20");
  b.resize(3074);
  r = record({4, 100});
  b.insert(b.end(), r.begin(), r.end());
  write_raw(c100, b);
  CHECK(load(c100, true) ==
        c100 + ": record 1 (byte offset 3075) has fine label 100, expected < 100");

  write_raw(c10, {});
  CHECK(load(c10, false) == c10 + ": empty file, not a CIFAR-10 batch");
  fs::remove(c10);
  fs::create_directory(c10);
  CHECK(load(c10, false) == c10 + ": not a regular file");

  fs::create_directories(dir.path() / "cifar");
  write_raw(dir.file("cifar/test_batch.bin"), record({2}));
  wb::Params p = data_params("cifar10", dir.file("cifar"));
  CHECK(wb::open_dataset(p, wb::Split::Test)->classes() == 10);
  p.set("num_classes", std::int64_t{100});
  CHECK_THROWS_WITH_AS(wb::open_dataset(p, wb::Split::Test),
                       "data.num_classes = 100, but cifar10 has 10 classes", std::invalid_argument);
}

TEST_CASE("image decoders: what PNG and JPEG variants become, and the kinds refused") {
  // 1-bit grey, rows 10101010 and 01010101: white and black alternate, as RGB.
  const Bytes grey1 = corpus_image("grey1_8x2.png");
  const wb::Image g = wb::data::decode_image(grey1.data(), grey1.size(), "grey1");
  REQUIRE(g.pixels.size() == 8 * 2 * 3);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 8; ++x)
      for (int c = 0; c < 3; ++c) CHECK(g.pixels[(y * 8 + x) * 3 + c] == ((x + y) % 2 ? 0 : 255));
  // A greyscale JPEG becomes RGB with three equal channels.
  const Bytes grey_jpeg = corpus_image("grey_8x8.jpg");
  const wb::Image j = wb::data::decode_image(grey_jpeg.data(), grey_jpeg.size(), "grey.jpg");
  REQUIRE(j.channels == 3);
  REQUIRE(j.pixels.size() == 8 * 8 * 3);
  for (std::size_t i = 0; i < j.pixels.size(); i += 3) {
    CHECK(j.pixels[i] == j.pixels[i + 1]);
    CHECK(j.pixels[i] == j.pixels[i + 2]);
  }
  // A CMYK JPEG has no conversion to RGB: refused by name, not as "corrupt".
  const Bytes cmyk = corpus_image("cmyk_8x8.jpg");
  CHECK(message_of([&] { wb::data::decode_image(cmyk.data(), cmyk.size(), "c.jpg"); }) ==
        "c.jpg: JPEG in CMYK with 4 components: only greyscale and colour (YCbCr / RGB) JPEGs "
        "are read; convert it to RGB");
  // Every seed of the fuzz corpus decodes to a buffer matching its shape, except CMYK, the
  // fuzzers' findings and the large JPEG (tested where they are described).
  for (const auto& entry : fs::directory_iterator(corpus("image"))) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("cmyk", 0) == 0 || name.rfind("finding", 0) == 0 || name.rfind("large", 0) == 0)
      continue;
    CAPTURE(name);
    const Bytes bytes = corpus_image(name);
    const wb::Image im = wb::data::decode_image(bytes.data(), bytes.size(), name);
    CHECK(im.pixels.size() == static_cast<std::size_t>(im.width * im.height * 3));
  }
  TempDir dir;
  CHECK(message_of([&] { wb::data::read_file(dir.path().string()); }) ==
        dir.path().string() + ": not a regular file");
  // Found by fuzz_image (fuzz/corpus/image/finding_eoi_*): a JPEG whose compressed data ends
  // (at a marker) long before the frame it declares. libjpeg only warns and fills the rest
  // with grey, so 500 bytes would yield 4000 x 4000 pixels (34 Mpx in the fuzzer's case).
  const Bytes found = corpus_image("finding_eoi_2064x16641.jpg");
  CHECK(message_of([&] { wb::data::decode_image(found.data(), found.size(), "f.jpg"); }) ==
        "f.jpg: corrupt JPEG: Corrupt JPEG data: premature end of data segment");
  const Bytes early_end = jpeg_claiming(dir, 4000, 4000);
  CHECK(message_of([&] { wb::data::decode_image(early_end.data(), early_end.size(), "e.jpg"); }) ==
        "e.jpg: corrupt JPEG: Corrupt JPEG data: premature end of data segment");
  // Like a JPEG fuzz_image timed out on: 8200 x 12296 pixels in 128 bytes (arithmetic coding of a
  // constant grey). At full size it would be 100 Mpx decoded, then resized: refused; for 224 px
  // it is decoded at 1/8, 1025 x 1537, and every pixel is the grey written.
  const Bytes large = corpus_image("large_8200x12296.jpg");
  CHECK(message_of([&] { wb::data::decode_image(large.data(), large.size(), "l.jpg"); }) ==
        "l.jpg: JPEG of 8200 x 12296 pixels would decode to 8200 x 12296 = 100827200 pixels, "
        "more than the 67108864 (8192 x 8192) decoded at most; shrink the file, or read it for a "
        "smaller image size (a JPEG is then decoded at a reduced scale, down to 1/8)");
  const wb::Image eighth = wb::data::decode_image(large.data(), large.size(), "l.jpg", 224);
  CHECK(eighth.width == 1025);
  CHECK(eighth.height == 1537);
  const auto [lo, hi] = std::minmax_element(eighth.pixels.begin(), eighth.pixels.end());
  CHECK(*lo == kLargeGrey);
  CHECK(*hi == kLargeGrey);
}

TEST_CASE("large JPEGs: decoded at the smallest DCT scale N/8 for the side asked, as if resized") {
  // A smooth grey 6000 x 6000 image, 128 + 60 sin(2 pi x / 1500) cos(2 pi y / 1000): smooth, so
  // that the two paths below differ only by rounding, not by what their filters keep.
  const std::int64_t n = 6000;
  std::vector<double> across(n), down(n);
  for (std::int64_t i = 0; i < n; ++i) {
    across[i] = 60 * std::sin(2 * M_PI * static_cast<double>(i) / 1500);
    down[i] = std::cos(2 * M_PI * static_cast<double>(i) / 1000);
  }
  wb::Image grey;
  grey.channels = 1;
  grey.height = grey.width = n;
  grey.pixels.resize(static_cast<std::size_t>(n * n));
  for (std::int64_t y = 0; y < n; ++y)
    for (std::int64_t x = 0; x < n; ++x)
      grey.pixels[y * n + x] = static_cast<std::uint8_t>(std::lround(128 + across[x] * down[y]));
  TempDir dir;
  wb::data::write_jpeg(dir.file("large.jpg"), grey, 90);
  grey = {};
  const Bytes file = wb::data::read_file(dir.file("large.jpg"));
  auto decode = [&](std::int64_t min_side) {
    return wb::data::decode_image(file.data(), file.size(), "large.jpg", min_side);
  };
  const wb::Image full = decode(0);
  REQUIRE(full.width == n);
  REQUIRE(full.height == n);
  const wb::Image reference = wb::data::resize_center_square(full, 224);
  const auto [lo, hi] = std::minmax_element(reference.pixels.begin(), reference.pixels.end());
  CHECK(*hi - *lo > 100);  // the pattern survives the resize: the comparison is not of flat images

  // For 224 px 1/8 is enough (750); for 2000 px 2/8 (1500) is too small and 3/8 (2250) is the
  // smallest that is not.
  for (const auto& [min_side, side] :
       {std::pair<std::int64_t, std::int64_t>{224, 750}, {2000, 2250}}) {
    CAPTURE(min_side);
    const wb::Image scaled = decode(min_side);
    CHECK(scaled.width == side);
    CHECK(scaled.height == side);
    // Resized to 224 it is the full decode resized to 224, up to rounding: the DCT scaling
    // averages each 8 x 8 block into N x N pixels (rounded to integers, +-0.5) and the resize
    // spreads its triangle over 3.3 to 27 of those; on this pattern (curvature below 0.004
    // grey levels per pixel squared) the filters' different widths change the result by less
    // than 0.05. With the rounding of the two outputs that is at most 2 grey levels anywhere.
    const wb::Image resized = wb::data::resize_center_square(scaled, 224);
    REQUIRE(resized.pixels.size() == reference.pixels.size());
    int worst = 0;
    double total = 0;
    for (std::size_t i = 0; i < resized.pixels.size(); ++i) {
      const int d = std::abs(int(resized.pixels[i]) - int(reference.pixels[i]));
      worst = std::max(worst, d);
      total += d;
    }
    CHECK(worst <= 2);
    CHECK(total / static_cast<double>(resized.pixels.size()) < 0.5);
  }
}

TEST_CASE("image folder: image_size 0 keeps the native size, mixed sizes then need one") {
  TempDir dir;
  fs::create_directories(dir.path() / "a");
  fs::create_directories(dir.path() / "b");
  wb::write_png(dir.file("a/0.png"), solid(12, 12, 10));
  wb::write_png(dir.file("a/1.png"), solid(20, 12, 20));  // 12 x 20: central 12 x 12
  wb::write_png(dir.file("b/0.png"), solid(10, 16, 30));  // shorter side 10
  auto d = wb::data::open_folder(dir.path().string(), "f", 0);
  CHECK(d->image_size() == 12);
  const wb::Image first = d->image(0);
  CHECK(first.width == 12);
  CHECK(first.pixels == solid(12, 12, 10).pixels);
  CHECK(d->image(1).pixels == solid(12, 12, 20).pixels);
  CHECK(message_of([&] { d->image(2); }) ==
        dir.file("b/0.png") +
            ": 16 x 10 pixels, but with data.image_size = 0 (native size) every image must "
            "have the shorter side of the first, " +
            dir.file("a/0.png") + ": 12 px; set data.image_size to resize them all");
  // With a size, every image is resized to it.
  auto sized = wb::data::open_folder(dir.path().string(), "f", 6);
  CHECK(sized->image(2).pixels == solid(6, 6, 30).pixels);
}

TEST_CASE("image folder: empty classes, test splits with the training classes, num_classes") {
  TempDir dir;
  for (const char* c : {"train/ant", "train/bee", "train/cat", "test/ant", "test/cat"})
    fs::create_directories(dir.path() / c);
  for (const char* f : {"train/ant/0.png", "train/bee/0.png", "train/cat/0.png", "test/ant/0.png",
                        "test/cat/0.png"})
    wb::write_png(dir.file(f), solid(4, 4, 1));
  wb::Params p = data_params("folder", dir.path().string());
  auto train = wb::open_dataset(p, wb::Split::Train);
  auto test = wb::open_dataset(p, wb::Split::Test);
  CHECK(train->classes() == 3);
  // test/ has no bee: cat keeps label 2, as in train/.
  CHECK(test->classes() == 3);
  REQUIRE(test->size() == 2);
  CHECK(test->label(0) == 0);
  CHECK(test->label(1) == 2);
  p.set("num_classes", std::int64_t{4});
  CHECK_THROWS_WITH_AS(wb::open_dataset(p, wb::Split::Train),
                       has("data.num_classes = 4, but " + dir.file("train") + " has 3 classes"),
                       std::invalid_argument);

  fs::create_directories(dir.path() / "test" / "dog");
  CHECK(message_of([&] {
          wb::open_dataset(data_params("folder", dir.path().string()), wb::Split::Test);
        }) ==
        dir.file("test/dog") +
            ": a class the training folder does not have; its labels would not match (training "
            "classes: ant, bee, cat)");
  fs::create_directories(dir.path() / "train" / "dog");
  CHECK(message_of([&] {
          wb::open_dataset(data_params("folder", dir.path().string()), wb::Split::Train);
        }) == dir.file("train/dog") +
                  ": class folder without .jpg/.jpeg/.png images; remove it or add "
                  "its images");
}

namespace {

// A digits file: image i of the list has label labels[i] and every pixel count (i + p) % 17.
std::string digits_text(const std::vector<int>& labels) {
  std::string text;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    for (int p = 0; p < 64; ++p) text += std::to_string((i + p) % 17) + ",";
    text += std::to_string(labels[i]) + "\n";
  }
  return text;
}

Bytes bytes_of(const std::string& text) {
  return Bytes(text.begin(), text.end());
}

}  // namespace

TEST_CASE("digits: the fixed split, pixel scaling, gzip or plain, lines that lie") {
  TempDir dir;
  // Six images of class 3 and six of class 7, interleaved: the fifth of each class (file
  // images 8 and 9) is a test image.
  std::vector<int> labels;
  for (int i = 0; i < 6; ++i) labels.insert(labels.end(), {3, 7});
  const std::string gz = dir.file("digits.csv.gz");
  write_gz(gz, bytes_of(digits_text(labels)));
  auto train = wb::data::load_digits(gz, true, "d", 0);
  auto test = wb::data::load_digits(gz, false, "d", 0);
  REQUIRE(train->size() == 10);
  REQUIRE(test->size() == 2);
  CHECK(train->classes() == 10);
  CHECK(test->label(0) == 3);
  CHECK(test->label(1) == 7);
  // Counts 0..16 become round(count x 255 / 16): file image 8's pixel p holds (8 + p) % 17.
  const wb::Image first_test = test->image(0);
  REQUIRE(first_test.pixels.size() == 64);
  CHECK(first_test.height == 8);
  for (int p = 0; p < 64; ++p) {
    const int count = (8 + p) % 17;
    CHECK(int(first_test.pixels[p]) == int(std::lround(count * 255.0 / 16.0)));
  }
  // Train keeps file order without images 8 and 9: its 9th image is file image 10.
  CHECK(int(train->image(8).pixels[0]) == int(std::lround(10 * 255.0 / 16.0)));

  // Plain text reads the same; open_dataset finds digits.csv.gz in a folder and resizes.
  const std::string plain = dir.file("plain.csv");
  write_raw(plain, bytes_of(digits_text(labels)));
  CHECK(wb::data::load_digits(plain, false, "d", 0)->image(1).pixels == test->image(1).pixels);
  wb::Params p = data_params("digits", dir.path().string());
  p.set("image_size", std::int64_t{28});
  auto resized = wb::open_dataset(p, wb::Split::Test);
  CHECK(resized->image_size() == 28);
  CHECK(resized->image(0).pixels.size() == 28 * 28);

  auto refused = [&](const std::string& text) {
    write_raw(plain, bytes_of(text));
    return message_of([&] { wb::data::load_digits(plain, true, "d", 0); });
  };
  std::string text = digits_text({1, 2});
  CHECK(refused(text + "1,2,3\n") == plain + ":3: 3 fields, expected 65 (64 pixels, label)");
  std::string bad = digits_text({4});
  bad.replace(0, 1, "17");
  CHECK(refused(text + bad) == plain + ":3: pixel 0 is 17, counts lie in 0..16");
  bad = digits_text({10});
  CHECK(refused(bad) == plain + ":1: label 10, digits are 0..9");
  bad = digits_text({1});
  bad.replace(0, 1, "x");
  CHECK(refused(bad) == plain + ":1: field 1 is not a non-negative integer");
  bad = digits_text({1});
  bad.replace(1, 1, ";");
  CHECK(refused(bad) == plain + ":1: unexpected character ';' after field 1");
  CHECK(refused("") == plain + ": no training images (the file holds 0 lines)");
  p.set("num_classes", std::int64_t{12});
  CHECK_THROWS_WITH_AS(wb::open_dataset(p, wb::Split::Test),
                       "data.num_classes = 12, but digits has 10 classes", std::invalid_argument);
}

TEST_CASE("digits: scikit-learn's file, where Debian's python3-sklearn installed it") {
  const std::string file = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz";
  if (!fs::exists(file)) {
    MESSAGE("skipped: " << file << " is absent (scripts/setup.sh installs python3-sklearn)");
    return;
  }
  auto train = wb::open_dataset(data_params("digits", ""), wb::Split::Train);
  auto test = wb::open_dataset(data_params("digits", ""), wb::Split::Test);
  CHECK(train->size() + test->size() == 1797);
  // Every fifth image of each class is a test image: floor(class size / 5) per class.
  std::vector<std::int64_t> in_test(10, 0), in_all(10, 0);
  for (std::int64_t i = 0; i < test->size(); ++i) ++in_test[test->label(i)];
  for (std::int64_t i = 0; i < train->size(); ++i) ++in_all[train->label(i)];
  for (std::int64_t c = 0; c < 10; ++c) {
    in_all[c] += in_test[c];
    CHECK(in_test[c] == in_all[c] / 5);
  }
  CHECK(test->size() == 355);
  CHECK(train->image(0).height == 8);
}
