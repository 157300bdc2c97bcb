// Raster helpers for evaluator figures (workbench/draw.h).
#include "workbench/draw.h"

#include <png.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace wb {

namespace {

// Viridis sampled at nine evenly spaced points; linear interpolation in between is within a
// few levels of the full table.
constexpr std::array<std::array<int, 3>, 9> kViridis{{{68, 1, 84},
                                                      {71, 44, 122},
                                                      {59, 82, 139},
                                                      {44, 113, 142},
                                                      {33, 145, 140},
                                                      {39, 173, 129},
                                                      {92, 200, 99},
                                                      {170, 220, 50},
                                                      {253, 231, 37}}};

// 3x5 glyphs, one row per 3 bits (most significant bit = left column).
const std::array<std::uint8_t, 5>* glyph(char c) {
  static const std::array<std::array<std::uint8_t, 5>, 12> glyphs{{
      {7, 5, 5, 5, 7},  // 0
      {2, 6, 2, 2, 7},  // 1
      {7, 1, 7, 4, 7},  // 2
      {7, 1, 7, 1, 7},  // 3
      {5, 5, 7, 1, 1},  // 4
      {7, 4, 7, 1, 7},  // 5
      {7, 4, 7, 5, 7},  // 6
      {7, 1, 1, 1, 1},  // 7
      {7, 5, 7, 5, 7},  // 8
      {7, 5, 7, 1, 7},  // 9
      {0, 0, 0, 0, 2},  // .
      {0, 0, 7, 0, 0},  // -
  }};
  if (c >= '0' && c <= '9') return &glyphs[static_cast<std::size_t>(c - '0')];
  if (c == '.') return &glyphs[10];
  if (c == '-') return &glyphs[11];
  return nullptr;
}

void set_pixel(Image& image, std::int64_t x, std::int64_t y, Rgb c) {
  if (x < 0 || y < 0 || x >= image.width || y >= image.height) return;
  std::uint8_t* p = &image.pixels[static_cast<std::size_t>((y * image.width + x) * image.channels)];
  if (image.channels == 1) {
    p[0] = static_cast<std::uint8_t>((c.r + c.g + c.b) / 3);
  } else {
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
  }
}

std::string format_short(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

}  // namespace

Rgb viridis(double t) {
  if (!(t > 0)) t = 0;  // also NaN
  t = std::min(t, 1.0);
  const double pos = t * static_cast<double>(kViridis.size() - 1);
  const auto i = std::min<std::size_t>(static_cast<std::size_t>(pos), kViridis.size() - 2);
  const double f = pos - static_cast<double>(i);
  auto mix = [&](int ch) {
    return static_cast<std::uint8_t>(
        std::lround(kViridis[i][ch] + f * (kViridis[i + 1][ch] - kViridis[i][ch])));
  };
  return {mix(0), mix(1), mix(2)};
}

Image rgb_image(std::int64_t width, std::int64_t height, Rgb fill) {
  if (width <= 0 || height <= 0) throw std::invalid_argument("image size must be positive");
  Image image{3, height, width, {}};
  image.pixels.resize(static_cast<std::size_t>(width * height * 3));
  for (std::size_t p = 0; p < image.pixels.size(); p += 3) {
    image.pixels[p] = fill.r;
    image.pixels[p + 1] = fill.g;
    image.pixels[p + 2] = fill.b;
  }
  return image;
}

void fill_rect(Image& image, std::int64_t x, std::int64_t y, std::int64_t w, std::int64_t h,
               Rgb colour) {
  for (std::int64_t yy = y; yy < y + h; ++yy)
    for (std::int64_t xx = x; xx < x + w; ++xx) set_pixel(image, xx, yy, colour);
}

void outline_rect(Image& image, std::int64_t x, std::int64_t y, std::int64_t w, std::int64_t h,
                  Rgb colour, std::int64_t thickness) {
  const std::int64_t t = std::max<std::int64_t>(1, std::min({thickness, w, h}));
  fill_rect(image, x, y, w, t, colour);
  fill_rect(image, x, y + h - t, w, t, colour);
  fill_rect(image, x, y, t, h, colour);
  fill_rect(image, x + w - t, y, t, h, colour);
}

void draw_line(Image& image, double x0, double y0, double x1, double y1, Rgb colour) {
  const double n = std::max({std::abs(x1 - x0), std::abs(y1 - y0), 1.0});
  for (int i = 0; i <= static_cast<int>(n); ++i) {
    const double t = i / n;
    set_pixel(image, std::lround(x0 + t * (x1 - x0)), std::lround(y0 + t * (y1 - y0)), colour);
  }
}

void paste(Image& image, const Image& tile, std::int64_t x, std::int64_t y, std::int64_t scale) {
  if (tile.channels != 1 && tile.channels != 3)
    throw std::invalid_argument("paste: tiles must have 1 or 3 channels");
  for (std::int64_t ty = 0; ty < tile.height; ++ty)
    for (std::int64_t tx = 0; tx < tile.width; ++tx) {
      const std::uint8_t* p =
          &tile.pixels[static_cast<std::size_t>((ty * tile.width + tx) * tile.channels)];
      const Rgb c = tile.channels == 1 ? Rgb{p[0], p[0], p[0]} : Rgb{p[0], p[1], p[2]};
      fill_rect(image, x + tx * scale, y + ty * scale, scale, scale, c);
    }
}

std::int64_t text_width(const std::string& text, std::int64_t scale) {
  if (text.empty()) return 0;
  return (4 * static_cast<std::int64_t>(text.size()) - 1) * scale;
}

void draw_text(Image& image, const std::string& text, std::int64_t x, std::int64_t y,
               std::int64_t scale, Rgb colour) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto* g = glyph(text[i]);
    if (!g) continue;
    const std::int64_t gx = x + static_cast<std::int64_t>(i) * 4 * scale;
    for (std::int64_t row = 0; row < 5; ++row)
      for (std::int64_t col = 0; col < 3; ++col)
        if ((*g)[static_cast<std::size_t>(row)] & (4 >> col))
          fill_rect(image, gx + col * scale, y + row * scale, scale, scale, colour);
  }
}

Image heatmap(const std::vector<double>& values, std::int64_t rows, std::int64_t cols,
              std::int64_t cell, double vmax) {
  if (rows <= 0 || cols <= 0 || static_cast<std::int64_t>(values.size()) != rows * cols)
    throw std::invalid_argument("heatmap: " + std::to_string(values.size()) + " values for a " +
                                std::to_string(rows) + " x " + std::to_string(cols) + " matrix");
  if (vmax <= 0) vmax = *std::max_element(values.begin(), values.end());
  if (!(vmax > 0)) vmax = 1;
  const std::int64_t font = std::max<std::int64_t>(1, cell / 8);
  const std::int64_t gap = 2 * font;
  const std::int64_t left = text_width(std::to_string(rows - 1), font) + 2 * gap;
  const std::int64_t top = 5 * font + 2 * gap;
  const std::string top_label = format_short(vmax);
  const std::int64_t bar = cell / 2 + 1;
  const std::int64_t width = left + cols * cell + 2 * gap + bar + gap +
                             std::max(text_width(top_label, font), 3 * font) + gap;
  const std::int64_t height = top + std::max<std::int64_t>(rows * cell, 10 * font + 2) + gap;
  const Rgb white{255, 255, 255}, black{0, 0, 0};
  Image image = rgb_image(width, height, white);
  for (std::int64_t c = 0; c < cols; ++c) {
    const std::string label = std::to_string(c);
    draw_text(image, label, left + c * cell + (cell - text_width(label, font)) / 2, gap, font,
              black);
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::string label = std::to_string(r);
    draw_text(image, label, left - gap - text_width(label, font),
              top + r * cell + (cell - 5 * font) / 2, font, black);
    for (std::int64_t c = 0; c < cols; ++c)
      fill_rect(image, left + c * cell, top + r * cell, cell, cell,
                viridis(values[static_cast<std::size_t>(r * cols + c)] / vmax));
  }
  // Colour bar: vmax at the top, 0 at the bottom.
  const std::int64_t bar_x = left + cols * cell + 2 * gap;
  const std::int64_t bar_h = std::max<std::int64_t>(rows * cell, 10 * font + 2);
  for (std::int64_t y = 0; y < bar_h; ++y)
    fill_rect(image, bar_x, top + y, bar, 1,
              viridis(1.0 - static_cast<double>(y) / static_cast<double>(bar_h - 1)));
  draw_text(image, top_label, bar_x + bar + gap, top, font, black);
  draw_text(image, "0", bar_x + bar + gap, top + bar_h - 5 * font, font, black);
  return image;
}

void write_png(const std::string& path, const Image& image) {
  auto fail = [&](const std::string& what) { throw std::runtime_error(path + ": " + what); };
  if (image.channels != 1 && image.channels != 3)
    fail("can only write 1- or 3-channel images, got " + std::to_string(image.channels));
  if (static_cast<std::int64_t>(image.pixels.size()) != image.channels * image.height * image.width)
    fail("image buffer size does not match its shape");
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = image.channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  const std::string tmp = path + ".tmp";
  if (!png_image_write_to_file(&png, tmp.c_str(), 0, image.pixels.data(), 0, nullptr))
    fail(std::string("cannot write PNG: ") + png.message);
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail("cannot rename " + tmp + ": " + ec.message());
}

}  // namespace wb
