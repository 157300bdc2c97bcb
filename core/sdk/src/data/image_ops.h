// Pixel operations of the view pipeline on float CHW buffers with values in [0, 1]
// (torchvision's tensor semantics), plus the resampler that turns a crop of an 8-bit HWC
// image into such a buffer. Free of LibTorch: the loader's workers call these on their own
// buffers.
#pragma once

#include <cstdint>
#include <vector>

#include "workbench/data.h"

namespace wb::data {

// A crop in pixels of the source image.
struct PixelCrop {
  std::int64_t x = 0, y = 0, w = 0, h = 0;
};

// Resamples `crop` of an HWC uint8 image to out_h x out_w, writing CHW floats in [0, 1].
// Bilinear (triangle filter); when downscaling the filter widens with the scale factor so
// every source pixel contributes (antialiasing, as PIL does). `flip` mirrors the output
// horizontally at no extra cost.
void resample(const Image& image, const PixelCrop& crop, std::int64_t out_h, std::int64_t out_w,
              bool flip, float* out);

// Resamples to a new 8-bit image (used to resize data sets on load).
Image resize_image(const Image& image, const PixelCrop& crop, std::int64_t out_h,
                   std::int64_t out_w);

// Shorter side to `side`, then the central side x side square (keeps the aspect ratio); a
// copy of the central square when the shorter side is `side` already.
Image resize_center_square(const Image& image, std::int64_t side);

// Colour operations; `c` channels of `hw` pixels each, values clamped to [0, 1] afterwards
// as torchvision does. Saturation and hue leave 1-channel images unchanged.
void adjust_brightness(float* p, std::int64_t c, std::int64_t hw, double factor);
void adjust_contrast(float* p, std::int64_t c, std::int64_t hw, double factor);
void adjust_saturation(float* p, std::int64_t c, std::int64_t hw, double factor);
void adjust_hue(float* p, std::int64_t c, std::int64_t hw, double shift);  // shift in [-0.5, 0.5]
// Luma with torchvision's weights (0.2989, 0.587, 0.114), written to all three channels.
void to_grayscale(float* p, std::int64_t c, std::int64_t hw);
// Separable Gaussian blur, kernel radius ceil(3 sigma) (at least 1), reflected borders.
void gaussian_blur(float* p, std::int64_t c, std::int64_t h, std::int64_t w, double sigma);
// Values >= threshold become 1 - value.
void solarize(float* p, std::int64_t n, double threshold);
// (value - mean[ch]) / std[ch].
void normalize(float* p, std::int64_t c, std::int64_t hw, const std::vector<double>& mean,
               const std::vector<double>& std);

// Gaussian kernel of radius ceil(3 sigma), normalised (exposed for tests).
std::vector<float> gaussian_kernel(double sigma);

}  // namespace wb::data
