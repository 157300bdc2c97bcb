// Fuzz target: the JPEG and PNG decoders (data/codec.cpp) and the resize that follows them when
// a folder is read. Input: 1 byte side (mod 65), then the image file. As an image folder with
// data.image_size = side does, the image is decoded for that side (the JPEG decoder's DCT
// scaling) and resized to a side x side square; side 0 is image_size = 0 (the native size:
// decoded at full size, cropped to its central square).
// Findings: crashes, sanitizer reports (an allocation beyond -malloc_limit_mb included), an
// exception other than std::runtime_error, and an image whose buffer does not match its shape.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "data/codec.h"
#include "data/image_ops.h"
#include "fuzz_files.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::int64_t side = data[0] % 65;
  wb::Image img;
  try {
    img = wb::data::decode_image(data + 1, size - 1, "fuzz", side);
  } catch (const std::runtime_error&) {
    return 0;
  }
  if (img.channels != 3 || img.height <= 0 || img.width <= 0 ||
      img.pixels.size() != static_cast<std::size_t>(img.height * img.width * 3))
    wbfuzz::broken("decoded buffer does not match its shape");
  const std::int64_t out = side > 0 ? side : std::min(img.height, img.width);
  const wb::Image square = wb::data::resize_center_square(img, out);
  if (square.height != out || square.width != out ||
      square.pixels.size() != static_cast<std::size_t>(out * out * 3))
    wbfuzz::broken("resize_center_square gave the wrong shape");
  return 0;
}
