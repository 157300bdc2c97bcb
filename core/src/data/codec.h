// Image files: JPEG (libjpeg) and PNG (libpng) decoding and encoding. Every failure is a
// std::runtime_error naming the file; the libraries' default handlers (which print and
// exit) are never used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "workbench/data.h"

namespace wb::data {

std::vector<std::uint8_t> read_file(const std::string& path);

// Decodes a JPEG or PNG (recognised by its first bytes, not its name) to 8-bit RGB.
// min_side > 0 lets the JPEG decoder shrink by 1/2, 1/4 or 1/8 in the DCT (much faster)
// as long as the shorter side stays >= min_side.
Image decode_image(const std::uint8_t* data, std::size_t size, const std::string& name,
                   std::int64_t min_side = 0);
Image decode_image_file(const std::string& path, std::int64_t min_side = 0);

// 1-channel images are written as grey, 3-channel as RGB. Written to path + ".tmp" and
// renamed, so a reader never sees half a file. (PNG: wb::write_png, workbench/draw.h.)
void write_jpeg(const std::string& path, const Image& image, int quality = 90);

}  // namespace wb::data
