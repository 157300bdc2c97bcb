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

// Warnings are counted silently, except a premature end of data: a truncated file would
// otherwise decode with a grey bottom and nobody would notice.
extern "C" void jpeg_emit_message(j_common_ptr cinfo, int level) {
  if (level >= 0) return;
  if (cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_error_exit(cinfo);
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
    jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
    jpeg_read_header(&cinfo, TRUE);
  });
  cinfo.out_color_space = JCS_RGB;
  if (min_side > 0) {
    const auto shorter = std::min(cinfo.image_width, cinfo.image_height);
    for (unsigned denom : {8u, 4u, 2u})
      if ((shorter + denom - 1) / denom >= static_cast<unsigned>(min_side)) {
        cinfo.scale_num = 1;
        cinfo.scale_denom = denom;
        break;
      }
  }
  guarded(err, name, "corrupt JPEG", [&] { jpeg_start_decompress(&cinfo); });
  Image image;
  image.channels = 3;
  image.width = cinfo.output_width;
  image.height = cinfo.output_height;
  image.pixels.resize(static_cast<std::size_t>(image.width * image.height * 3));
  std::uint8_t* base = image.pixels.data();
  const std::size_t stride = static_cast<std::size_t>(image.width) * 3;
  guarded(err, name, "corrupt JPEG", [&] {
    while (cinfo.output_scanline < cinfo.output_height) {
      JSAMPROW row = base + cinfo.output_scanline * stride;
      jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
  });
  return image;
}

Image decode_png(const std::uint8_t* data, std::size_t size, const std::string& name) {
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, data, size))
    fail(name, std::string("corrupt PNG: ") + png.message);
  png.format = PNG_FORMAT_RGB;  // grey, palette, 16-bit and alpha all converted
  Image image;
  image.channels = 3;
  image.width = png.width;
  image.height = png.height;
  image.pixels.resize(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, image.pixels.data(), 0, nullptr)) {
    png_image_free(&png);
    fail(name, std::string("corrupt PNG: ") + png.message);
  }
  return image;
}

}  // namespace

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open: ") + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const auto size = static_cast<std::size_t>(in.tellg());
  in.seekg(0);
  std::vector<std::uint8_t> bytes(size);
  if (size && !in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size)))
    fail(path, "read error");
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
