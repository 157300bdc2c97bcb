// Small raster helpers for figures (routing maps, patch galleries, `workbench views`): a
// perceptual colour map, rectangles and lines, heat maps with numbered rows and columns, pasting
// upscaled tiles, and PNG output.
// Images are wb::Image (8-bit, channels interleaved); no LibTorch here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "workbench/data.h"

namespace wb {

struct Rgb {
  std::uint8_t r = 0, g = 0, b = 0;
};

// Viridis, t in [0, 1] (clamped): dark blue through green to yellow, monotonic in lightness.
Rgb viridis(double t);

// An RGB image filled with one colour.
Image rgb_image(std::int64_t width, std::int64_t height, Rgb fill);
// Drawing clips at the image's borders; 1-channel images get the mean of r, g and b.
void fill_rect(Image& image, std::int64_t x, std::int64_t y, std::int64_t w, std::int64_t h,
               Rgb colour);
// The outline of [x, x + w) x [y, y + h), `thickness` pixels wide, inside the rectangle.
void outline_rect(Image& image, std::int64_t x, std::int64_t y, std::int64_t w, std::int64_t h,
                  Rgb colour, std::int64_t thickness = 1);
// A one-pixel line from (x0, y0) to (x1, y1), both ends included.
void draw_line(Image& image, double x0, double y0, double x1, double y1, Rgb colour);
// Pastes `tile` (1 or 3 channels; grey becomes RGB) with its top-left corner at (x, y), every
// pixel repeated scale x scale times; what falls outside `image` is clipped.
void paste(Image& image, const Image& tile, std::int64_t x, std::int64_t y, std::int64_t scale);

// Text of digits, '.' and '-' in a 3x5 pixel font (one blank column between glyphs), each
// font pixel scale x scale; other characters draw as blanks.
void draw_text(Image& image, const std::string& text, std::int64_t x, std::int64_t y,
               std::int64_t scale, Rgb colour);
std::int64_t text_width(const std::string& text, std::int64_t scale);

// A heat map of a rows x cols matrix (row-major values), value / vmax through viridis, each
// entry a cell x cell square, rows and columns numbered from 0, and a colour bar labelled
// 0 and vmax. vmax <= 0 means the largest value (or 1 when all are 0).
Image heatmap(const std::vector<double>& values, std::int64_t rows, std::int64_t cols,
              std::int64_t cell, double vmax = 0);

// Writes 1-channel images as grey, 3-channel ones as RGB, atomically (tmp + rename).
void write_png(const std::string& path, const Image& image);

}  // namespace wb
