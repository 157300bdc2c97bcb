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
// min_side > 0 lets the JPEG decoder shrink in the DCT (much faster) to the smallest of 1/8,
// 2/8, ..., 7/8 of the size that keeps the shorter side >= min_side. A header claiming more
// than 178 956 970 pixels is refused before anything is read, and so is a decode that would
// give more than 2^26 (8192 x 8192) pixels: the error names the file and both sizes.
Image decode_image(const std::uint8_t* data, std::size_t size, const std::string& name,
                   std::int64_t min_side = 0);
Image decode_image_file(const std::string& path, std::int64_t min_side = 0);

// 1-channel images are written as grey, 3-channel as RGB. Written to path + ".tmp" and
// renamed, so a reader never sees half a file. (PNG: wb::write_png, workbench/draw.h.)
void write_jpeg(const std::string& path, const Image& image, int quality = 90);

}  // namespace wb::data
