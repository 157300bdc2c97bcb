// JPEG and PNG through libjpeg(-turbo) and libpng's simplified API (see codec.h).
#include "data/codec.h"

#include <png.h>

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

// jpeglib.h needs size_t and FILE declared first.
#include <jerror.h>
#include <jpeglib.h>

namespace wb::data {

namespace {

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw std::runtime_error(name + ": " + what);
}

// libjpeg reports errors through error_exit, which must not return. We longjmp back to the
// guard (below) that made the library call and throw from there, so no C++ frame is skipped
// by the jump except lambdas holding no objects with destructors.
struct JpegError {
  jpeg_error_mgr mgr;  // first member: libjpeg hands us &mgr as cinfo->err
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

extern "C" void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings are counted silently, except a premature end of the file or of the compressed
// data (a marker where data should be): a truncated file would otherwise decode with a grey
// bottom and nobody would notice, and a few hundred bytes could claim and yield megapixels.
extern "C" void jpeg_emit_message(j_common_ptr cinfo, int level) {
  if (level >= 0) return;
  const int code = cinfo->err->msg_code;
  if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER) jpeg_error_exit(cinfo);
  cinfo->err->num_warnings++;
}

void install(jpeg_error_mgr* mgr) {
  jpeg_std_error(mgr);
  mgr->error_exit = jpeg_error_exit;
  mgr->emit_message = jpeg_emit_message;
}

template <class F>
void guarded(JpegError& err, const std::string& name, const char* doing, F&& call) {
  if (setjmp(err.jump)) fail(name, std::string(doing) + ": " + err.message);
  call();
}

// A header may claim any size up to 65535 x 65535 (JPEG) or 2^31 x 2^31 (PNG) for a file of a
// few bytes. Images above this many pixels are refused before anything is allocated: Pillow's
// decompression-bomb limit (2 x MAX_IMAGE_PIXELS = 2 x 2^30 / 4 / 3), 537 MB as 8-bit RGB.
constexpr std::uint64_t kMaxImagePixels = 178956970;

// What one decode may produce: 2^26 pixels (8192 x 8192, 192 MiB as 8-bit RGB). Decoding and
// then resizing cost time in proportion to the decoded pixels (the resize reads each of them
// about twice per channel); a JPEG above it is still read when DCT scaling (min_side) brings
// its output under it.
constexpr std::uint64_t kMaxDecodedPixels = std::uint64_t{1} << 26;

void check_pixels(const std::string& name, const char* format, std::uint64_t width,
                  std::uint64_t height) {
  if (width == 0 || height == 0) fail(name, std::string("corrupt ") + format + ": no pixels");
  if (width * height > kMaxImagePixels)  // both < 2^32: no overflow
    fail(name, std::string(format) + " of " + std::to_string(width) + " x " +
                   std::to_string(height) + " pixels, more than the " +
                   std::to_string(kMaxImagePixels) + " accepted (a decompression bomb?)");
}

// `size` is what the header says ("JPEG of 9000 x 9000 pixels"), width x height what the
// decode would give.
void check_decoded(const std::string& name, const std::string& size, std::uint64_t width,
                   std::uint64_t height, const char* remedy) {
  if (width * height <= kMaxDecodedPixels) return;
  fail(name, size + " would decode to " + std::to_string(width) + " x " + std::to_string(height) +
                 " = " + std::to_string(width * height) + " pixels, more than the " +
                 std::to_string(kMaxDecodedPixels) + " (8192 x 8192) decoded at most; " + remedy);
}

std::string dimensions(const char* format, std::uint64_t width, std::uint64_t height) {
  return std::string(format) + " of " + std::to_string(width) + " x " + std::to_string(height) +
         " pixels";
}

// Grows `buf` to hold at least `need` of `total` bytes, geometrically: a file whose data
// stops early costs memory in proportion to what it really holds, not to what its header says.
void grow(std::vector<std::uint8_t>& buf, std::size_t need, std::size_t total) {
  if (need <= buf.size()) return;
  const std::size_t target = std::min(total, std::max(need, 2 * buf.size()));
  buf.reserve(target);  // exactly target: resize alone may double the capacity
  buf.resize(target);
}

const char* jpeg_space_name(J_COLOR_SPACE space) {
  switch (space) {
    case JCS_CMYK:
      return "CMYK";
    case JCS_YCCK:
      return "YCCK";
    default:
      return "an unknown colour space";
  }
}

// Sets the smallest DCT scale N/8 (N = 1..8: libjpeg-turbo's inverse DCT outputs 1 to 8 pixels
// per 8 x 8 block, which is much faster than decoding everything and resizing afterwards)
// whose output keeps the shorter side >= min_side; full size when min_side is 0 or no smaller
// scale reaches it. output_width and output_height are then the decoded size.
void choose_scale(jpeg_decompress_struct& cinfo, std::int64_t min_side) {
  cinfo.scale_denom = 8;
  for (unsigned n = min_side > 0 ? 1 : 8; n <= 8; ++n) {
    cinfo.scale_num = n;
    jpeg_calc_output_dimensions(&cinfo);
    if (std::min(cinfo.output_width, cinfo.output_height) >= static_cast<std::uint64_t>(min_side))
      return;
  }
}

Image decode_jpeg(const std::uint8_t* data, std::size_t size, const std::string& name,
                  std::int64_t min_side) {
  jpeg_decompress_struct cinfo;
  std::memset(&cinfo, 0, sizeof cinfo);
  JpegError err;
  install(&err.mgr);
  cinfo.err = &err.mgr;
  struct Destroy {
    jpeg_decompress_struct* c;
    ~Destroy() { jpeg_destroy_decompress(c); }
  } destroy{&cinfo};
  guarded(err, name, "corrupt JPEG", [&] {
    jpeg_create_decompress(&cinfo);
    // Bounds the library's own buffers (a progressive file's coefficients: 6 bytes a pixel at
    // most); above it libjpeg stops with "Backing store not supported" instead of allocating.
    cinfo.mem->max_memory_to_use = static_cast<long>(8 * kMaxImagePixels);
    jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
    jpeg_read_header(&cinfo, TRUE);
  });
  check_pixels(name, "JPEG", cinfo.image_width, cinfo.image_height);
  // libjpeg converts greyscale, YCbCr and RGB to RGB; anything else would fail later with
  // "Unsupported color conversion request", which does not say what is wrong with the file.
  const J_COLOR_SPACE space = cinfo.jpeg_color_space;
  if (space != JCS_GRAYSCALE && space != JCS_YCbCr && space != JCS_RGB)
    fail(name, std::string("JPEG in ") + jpeg_space_name(space) + " with " +
                   std::to_string(cinfo.num_components) +
                   " components: only greyscale and colour (YCbCr / RGB) JPEGs are read; "
                   "convert it to RGB");
  cinfo.out_color_space = JCS_RGB;
  guarded(err, name, "corrupt JPEG", [&] { choose_scale(cinfo, min_side); });
  check_decoded(name, dimensions("JPEG", cinfo.image_width, cinfo.image_height), cinfo.output_width,
                cinfo.output_height,
                "shrink the file, or read it for a smaller image size (a JPEG is then decoded at "
                "a reduced scale, down to 1/8)");
  guarded(err, name, "corrupt JPEG", [&] { jpeg_start_decompress(&cinfo); });
  Image image;
  image.channels = 3;
  image.width = cinfo.output_width;
  image.height = cinfo.output_height;
  const std::size_t stride = static_cast<std::size_t>(image.width) * 3;
  const std::size_t total = stride * static_cast<std::size_t>(image.height);
  guarded(err, name, "corrupt JPEG", [&] {
    while (cinfo.output_scanline < cinfo.output_height) {
      const std::size_t at = cinfo.output_scanline * stride;
      grow(image.pixels, at + stride, total);
      JSAMPROW row = image.pixels.data() + at;
      jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
  });
  return image;
}

// Deflate compresses at most 1032:1 (zlib's FAQ), so a PNG's file size bounds the rows it
// can hold: a header claiming more is refused before the image buffer is allocated.
void check_png_holds(const std::uint8_t* data, std::size_t size, const std::string& name,
                     std::uint64_t width, std::uint64_t height) {
  // IHDR is the first chunk (libpng refuses anything else): bit depth at byte 24, colour
  // type at 25.
  const std::uint64_t depth = data[24];
  const std::uint8_t type = data[25];
  const std::uint64_t samples = type == 2 ? 3 : type == 4 ? 2 : type == 6 ? 4 : 1;
  const std::uint64_t row = 1 + (width * samples * depth + 7) / 8;  // filter byte + samples
  const std::uint64_t raw = row * height;                           // < 2^31 x 2^34: no overflow
  const std::uint64_t least = (raw + 1031) / 1032;
  if (size < least)
    fail(name, "truncated PNG: " + std::to_string(width) + " x " + std::to_string(height) +
                   " pixels need at least " + std::to_string(least) +
                   " bytes of compressed data, the file has " + std::to_string(size));
}

Image decode_png(const std::uint8_t* data, std::size_t size, const std::string& name) {
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, data, size))
    fail(name, std::string("corrupt PNG: ") + png.message);
  struct Free {
    png_image* p;
    ~Free() { png_image_free(p); }
  } free_png{&png};
  check_pixels(name, "PNG", png.width, png.height);
  check_png_holds(data, size, name, png.width, png.height);
  check_decoded(name, dimensions("PNG", png.width, png.height), png.width, png.height,
                "shrink the file (a PNG is always decoded at full size)");
  png.format = PNG_FORMAT_RGB;  // grey, palette, 16-bit and alpha all converted
  Image image;
  image.channels = 3;
  image.width = png.width;
  image.height = png.height;
  // Not PNG_IMAGE_SIZE: it multiplies in 32 bits.
  image.pixels.resize(static_cast<std::size_t>(png.width) * png.height * 3);
  if (!png_image_finish_read(&png, nullptr, image.pixels.data(), 0, nullptr))
    fail(name, std::string("corrupt PNG: ") + png.message);
  return image;
}

}  // namespace

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open: ") + std::strerror(errno));
  // A directory or a device opens too, and its "size" is meaningless.
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) fail(path, "not a regular file");
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) fail(path, "cannot read its size: " + ec.message());
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  if (size && !in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size)))
    fail(path, "read error (the file shrank while being read?)");
  return bytes;
}

Image decode_image(const std::uint8_t* data, std::size_t size, const std::string& name,
                   std::int64_t min_side) {
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
    return decode_jpeg(data, size, name, min_side);
  static const std::uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size >= 8 && std::memcmp(data, png_magic, 8) == 0) return decode_png(data, size, name);
  if (size == 0) fail(name, "empty file, not an image");
  char head[16];
  std::snprintf(head, sizeof head, "%02x %02x %02x", data[0], size > 1 ? data[1] : 0,
                size > 2 ? data[2] : 0);
  fail(name, std::string("not a JPEG or PNG image (starts with bytes ") + head + ")");
}

Image decode_image_file(const std::string& path, std::int64_t min_side) {
  const auto bytes = read_file(path);
  return decode_image(bytes.data(), bytes.size(), path, min_side);
}

namespace {
void check_writable(const Image& image, const std::string& path) {
  if (image.channels != 1 && image.channels != 3)
    fail(path, "can only write 1- or 3-channel images, got " + std::to_string(image.channels));
  if (static_cast<std::int64_t>(image.pixels.size()) != image.channels * image.height * image.width)
    fail(path, "image buffer size does not match its shape");
}

void commit(const std::string& tmp, const std::string& path) {
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail(path, "cannot rename " + tmp + ": " + ec.message());
}
}  // namespace

void write_jpeg(const std::string& path, const Image& image, int quality) {
  check_writable(image, path);
  const std::string tmp = path + ".tmp";
  std::FILE* file = std::fopen(tmp.c_str(), "wb");
  if (!file) fail(path, std::string("cannot create: ") + std::strerror(errno));
  jpeg_compress_struct cinfo;
  std::memset(&cinfo, 0, sizeof cinfo);
  JpegError err;
  install(&err.mgr);
  cinfo.err = &err.mgr;
  struct Cleanup {
    jpeg_compress_struct* c;
    std::FILE* f;
    ~Cleanup() {
      jpeg_destroy_compress(c);
      if (f) std::fclose(f);
    }
  } cleanup{&cinfo, file};
  const std::uint8_t* base = image.pixels.data();
  const std::size_t stride = static_cast<std::size_t>(image.width * image.channels);
  guarded(err, path, "cannot write JPEG", [&] {
    jpeg_create_compress(&cinfo);
    jpeg_stdio_dest(&cinfo, file);
    cinfo.image_width = static_cast<JDIMENSION>(image.width);
    cinfo.image_height = static_cast<JDIMENSION>(image.height);
    cinfo.input_components = static_cast<int>(image.channels);
    cinfo.in_color_space = image.channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
      JSAMPROW row = const_cast<std::uint8_t*>(base) + cinfo.next_scanline * stride;
      jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
  });
  const bool flushed = std::fclose(file) == 0;
  cleanup.f = nullptr;
  if (!flushed) fail(path, "cannot write JPEG (disk full?)");
  commit(tmp, path);
}

}  // namespace wb::data
