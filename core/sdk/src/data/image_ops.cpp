// Resampling and colour operations on float buffers (see image_ops.h).
// The loops below are the loader's hot path. At the project's -O2, GCC 12 vectorises only
// loops that need no runtime checks, which leaves these scalar; -O3 here makes the blur and
// the resampler several times faster. (Only -O3: a pragma that changes floating-point
// flags would stop the standard library's small functions from being inlined here.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3")
#endif

#include "data/image_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace wb::data {

namespace {

// Filter taps of one axis: output i reads `count` source pixels from `first` on.
struct AxisTaps {
  std::int64_t taps = 0;            // stride of `weight` per output
  std::vector<std::int64_t> first;  // absolute source index of the first tap
  std::vector<std::int64_t> count;
  std::vector<float> weight;  // [out * taps]
};

// Triangle (bilinear) filter over [offset, offset + in_size) of the source, widened by the
// scale factor when downscaling so that the output averages every source pixel it covers.
AxisTaps axis_taps(std::int64_t offset, std::int64_t in_size, std::int64_t out_size, float gain) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = filter_scale;  // triangle of radius 1, stretched
  AxisTaps t;
  t.taps = static_cast<std::int64_t>(std::ceil(support)) * 2 + 2;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weight.assign(out_size * t.taps, 0.0f);
  for (std::int64_t i = 0; i < out_size; ++i) {
    const double center = (static_cast<double>(i) + 0.5) * scale;  // in crop coordinates
    auto lo = std::max<std::int64_t>(static_cast<std::int64_t>(std::floor(center - support)), 0);
    auto hi =
        std::min<std::int64_t>(static_cast<std::int64_t>(std::ceil(center + support)), in_size);
    double total = 0;
    std::int64_t n = 0;
    float* w = &t.weight[i * t.taps];
    for (std::int64_t s = lo; s < hi && n < t.taps; ++s) {
      const double d = std::abs((static_cast<double>(s) + 0.5 - center) / filter_scale);
      const double v = d < 1.0 ? 1.0 - d : 0.0;
      w[n++] = static_cast<float>(v);
      total += v;
    }
    // Drop leading zero taps so `first` points at a contributing pixel.
    std::int64_t skip = 0;
    while (skip + 1 < n && w[skip] == 0.0f) ++skip;
    if (skip) {
      std::copy(w + skip, w + n, w);
      std::fill(w + n - skip, w + n, 0.0f);
      n -= skip;
    }
    for (std::int64_t k = 0; k < n; ++k) w[k] = static_cast<float>(w[k] / total * gain);
    t.first[i] = offset + lo + skip;
    t.count[i] = n;
  }
  return t;
}

void mirror(AxisTaps& t) {
  const auto n = static_cast<std::int64_t>(t.first.size());
  for (std::int64_t i = 0; i < n / 2; ++i) {
    const auto j = n - 1 - i;
    std::swap(t.first[i], t.first[j]);
    std::swap(t.count[i], t.count[j]);
    std::swap_ranges(&t.weight[i * t.taps], &t.weight[(i + 1) * t.taps], &t.weight[j * t.taps]);
  }
}

// Per-thread scratch space: the loader's workers call these functions thousands of times a
// second, and fresh (zero-filled, page-faulting) buffers cost as much as the arithmetic.
float* scratch(int which, std::size_t n) {
  thread_local std::vector<float> buffers[2];
  auto& b = buffers[which];
  if (b.size() < n) b.resize(n);
  return b.data();
}

inline float clamp01(float v) {
  return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
}

inline std::int64_t reflect(std::int64_t i, std::int64_t n) {
  if (n == 1) return 0;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * n - 2 - i;
  return i;
}

void check_crop(const Image& image, const PixelCrop& c) {
  if (c.w <= 0 || c.h <= 0 || c.x < 0 || c.y < 0 || c.x + c.w > image.width ||
      c.y + c.h > image.height)
    throw std::invalid_argument("crop (" + std::to_string(c.x) + ", " + std::to_string(c.y) + ", " +
                                std::to_string(c.w) + ", " + std::to_string(c.h) +
                                ") does not fit a " + std::to_string(image.width) + "x" +
                                std::to_string(image.height) + " image");
  if (static_cast<std::int64_t>(image.pixels.size()) != image.channels * image.height * image.width)
    throw std::invalid_argument("image buffer size does not match its shape");
}

}  // namespace

void resample(const Image& image, const PixelCrop& crop, std::int64_t out_h, std::int64_t out_w,
              bool flip, float* out) {
  check_crop(image, crop);
  const std::int64_t C = image.channels, W = image.width;
  // 1/255 folded into the horizontal weights: uint8 -> [0, 1] for free.
  AxisTaps tx = axis_taps(crop.x, crop.w, out_w, 1.0f / 255.0f);
  if (flip) mirror(tx);
  const AxisTaps ty = axis_taps(crop.y, crop.h, out_h, 1.0f);

  // Horizontal pass over the crop's rows: tmp[c][row][out_x].
  float* tmp = scratch(0, static_cast<std::size_t>(C * crop.h * out_w));
  const std::uint8_t* px = image.pixels.data();
  for (std::int64_t r = 0; r < crop.h; ++r) {
    const std::uint8_t* row = px + (crop.y + r) * W * C;
    for (std::int64_t c = 0; c < C; ++c) {
      float* dst = &tmp[(c * crop.h + r) * out_w];
      for (std::int64_t o = 0; o < out_w; ++o) {
        const float* w = &tx.weight[o * tx.taps];
        const std::uint8_t* s = row + tx.first[o] * C + c;
        float acc = 0;
        for (std::int64_t k = 0; k < tx.count[o]; ++k) acc += w[k] * static_cast<float>(s[k * C]);
        dst[o] = acc;
      }
    }
  }
  // Vertical pass: whole rows at a time (contiguous, vectorises).
  for (std::int64_t c = 0; c < C; ++c) {
    for (std::int64_t o = 0; o < out_h; ++o) {
      float* dst = out + (c * out_h + o) * out_w;
      std::fill(dst, dst + out_w, 0.0f);
      const float* w = &ty.weight[o * ty.taps];
      for (std::int64_t k = 0; k < ty.count[o]; ++k) {
        const float* src = tmp + (c * crop.h + (ty.first[o] - crop.y + k)) * out_w;
        const float wk = w[k];
        for (std::int64_t x = 0; x < out_w; ++x) dst[x] += wk * src[x];
      }
      for (std::int64_t x = 0; x < out_w; ++x) dst[x] = clamp01(dst[x]);
    }
  }
}

Image resize_image(const Image& image, const PixelCrop& crop, std::int64_t out_h,
                   std::int64_t out_w) {
  const std::int64_t C = image.channels;
  std::vector<float> chw(C * out_h * out_w);
  resample(image, crop, out_h, out_w, false, chw.data());
  Image out;
  out.channels = C;
  out.height = out_h;
  out.width = out_w;
  out.pixels.resize(chw.size());
  const std::int64_t hw = out_h * out_w;
  for (std::int64_t c = 0; c < C; ++c)
    for (std::int64_t i = 0; i < hw; ++i)
      out.pixels[i * C + c] = static_cast<std::uint8_t>(std::lround(chw[c * hw + i] * 255.0f));
  return out;
}

namespace {

// The pixels of `crop`, copied: what resampling it at scale 1 gives (each output pixel's filter
// then has its one non-zero tap on the source pixel under it), without the arithmetic.
Image crop_image(const Image& image, const PixelCrop& crop) {
  check_crop(image, crop);
  const std::int64_t C = image.channels;
  Image out;
  out.channels = C;
  out.height = crop.h;
  out.width = crop.w;
  out.pixels.resize(static_cast<std::size_t>(C * crop.h * crop.w));
  const auto row = static_cast<std::size_t>(C * crop.w);
  for (std::int64_t y = 0; y < crop.h; ++y)
    std::memcpy(out.pixels.data() + y * crop.w * C,
                image.pixels.data() + ((crop.y + y) * image.width + crop.x) * C, row);
  return out;
}

}  // namespace

Image resize_center_square(const Image& image, std::int64_t side) {
  const std::int64_t s = std::min(image.height, image.width);
  PixelCrop crop{(image.width - s) / 2, (image.height - s) / 2, s, s};
  if (s == side && image.height == image.width) return image;
  if (s == side) return crop_image(image, crop);
  return resize_image(image, crop, side, side);
}

void adjust_brightness(float* p, std::int64_t c, std::int64_t hw, double factor) {
  const auto f = static_cast<float>(factor);
  for (std::int64_t i = 0; i < c * hw; ++i) p[i] = clamp01(p[i] * f);
}

namespace {
inline float luma(float r, float g, float b) {
  return 0.2989f * r + 0.587f * g + 0.114f * b;
}
}  // namespace

void adjust_contrast(float* p, std::int64_t c, std::int64_t hw, double factor) {
  // torchvision: blend with the mean of the grayscale image.
  double sum = 0;
  if (c == 3) {
    for (std::int64_t i = 0; i < hw; ++i) sum += luma(p[i], p[hw + i], p[2 * hw + i]);
  } else {
    for (std::int64_t i = 0; i < c * hw; ++i) sum += p[i];
    sum /= static_cast<double>(c);
  }
  const auto mean = static_cast<float>(sum / static_cast<double>(hw));
  const auto f = static_cast<float>(factor);
  const float offset = (1.0f - f) * mean;
  for (std::int64_t i = 0; i < c * hw; ++i) p[i] = clamp01(f * p[i] + offset);
}

void adjust_saturation(float* p, std::int64_t c, std::int64_t hw, double factor) {
  if (c != 3) return;
  const auto f = static_cast<float>(factor);
  for (std::int64_t i = 0; i < hw; ++i) {
    const float g = (1.0f - f) * luma(p[i], p[hw + i], p[2 * hw + i]);
    for (std::int64_t ch = 0; ch < 3; ++ch) p[ch * hw + i] = clamp01(f * p[ch * hw + i] + g);
  }
}

namespace {

// torchvision's RGB -> HSV -> RGB with the hue moved by dh6 / 6, written branch-free for
// scalars and GCC vectors alike: with v = max, chroma = max - min and h6 = 6 x hue, each
// channel is v - chroma * clamp(min(k, 4 - k), 0, 1) for k = (n + h6) mod 6, n = 5, 3, 1 for
// R, G, B (the six-sector table's values, since v s = chroma). The compiler will not
// vectorise the scalar form by itself (the selects on comparisons stay branches).
template <class T, class M>
inline T select(M mask, T a, T b) {
  return mask ? a : b;
}
template <class T>
inline T vmax(T a, T b) {
  return select(a > b, a, b);
}
template <class T>
inline T vmin(T a, T b) {
  return select(a < b, a, b);
}

template <class T>
inline void rotate_hue(T& r, T& g, T& b, T dh6) {
  const T zero = r - r, one = zero + 1.0f, six = zero + 6.0f;
  const T maxc = vmax(r, vmax(g, b)), minc = vmin(r, vmin(g, b));
  const T chroma = maxc - minc;
  const T inv = one / select(chroma > zero, chroma, one);  // grey: h6 = 0, channels stay max
  const T hr = (g - b) * inv, hg = 2.0f + (b - r) * inv, hb = 4.0f + (r - g) * inv;
  T h6 = select(maxc == r, hr, select(maxc == g, hg, hb)) + dh6;  // in [-4, 8)
  h6 = select(h6 < zero, h6 + six, h6);
  h6 = select(h6 >= six, h6 - six, h6);
  auto channel = [&](float n) {
    T k = h6 + n;
    k = select(k >= six, k - six, k);
    return maxc - chroma * vmax(zero, vmin(vmin(k, 4.0f - k), one));
  };
  const T nr = channel(5.0f), ng = channel(3.0f), nb = channel(1.0f);
  r = nr;
  g = ng;
  b = nb;
}

}  // namespace

void adjust_hue(float* p, std::int64_t c, std::int64_t hw, double shift) {
  if (c != 3) return;
  const auto dh6 = static_cast<float>(shift * 6.0);
  float* R = p;
  float* G = p + hw;
  float* B = p + 2 * hw;
  std::int64_t i = 0;
#if defined(__GNUC__) && !defined(__clang__)
  typedef float v4f __attribute__((vector_size(16)));
  const v4f d = {dh6, dh6, dh6, dh6};
  for (; i + 4 <= hw; i += 4) {
    v4f r, g, b;
    std::memcpy(&r, R + i, sizeof r);
    std::memcpy(&g, G + i, sizeof g);
    std::memcpy(&b, B + i, sizeof b);
    rotate_hue(r, g, b, d);
    std::memcpy(R + i, &r, sizeof r);
    std::memcpy(G + i, &g, sizeof g);
    std::memcpy(B + i, &b, sizeof b);
  }
#endif
  for (; i < hw; ++i) rotate_hue(R[i], G[i], B[i], dh6);
}

void to_grayscale(float* p, std::int64_t c, std::int64_t hw) {
  if (c != 3) return;
  for (std::int64_t i = 0; i < hw; ++i) {
    const float l = luma(p[i], p[hw + i], p[2 * hw + i]);
    p[i] = p[hw + i] = p[2 * hw + i] = l;
  }
}

std::vector<float> gaussian_kernel(double sigma) {
  const auto radius = std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(3.0 * sigma)));
  std::vector<float> k(2 * radius + 1);
  double total = 0;
  for (std::int64_t i = -radius; i <= radius; ++i) {
    const double v = std::exp(-0.5 * static_cast<double>(i * i) / (sigma * sigma));
    k[i + radius] = static_cast<float>(v);
    total += v;
  }
  for (auto& v : k) v = static_cast<float>(v / total);
  return k;
}

void gaussian_blur(float* p, std::int64_t c, std::int64_t h, std::int64_t w, double sigma) {
  const std::vector<float> k = gaussian_kernel(sigma);
  const auto r = static_cast<std::int64_t>(k.size() / 2);
  const auto taps = static_cast<std::int64_t>(k.size());
  float* padded = scratch(0, static_cast<std::size_t>(w + 2 * r));
  float* tmp = scratch(1, static_cast<std::size_t>(h * w));
  for (std::int64_t ch = 0; ch < c; ++ch) {
    float* img = p + ch * h * w;
    // Horizontal: each row into a reflected, padded buffer, then one shifted multiply-add per
    // tap over the whole row (vectorises; a per-pixel dot product would not).
    for (std::int64_t y = 0; y < h; ++y) {
      const float* row = img + y * w;
      for (std::int64_t x = -r; x < w + r; ++x) padded[x + r] = row[reflect(x, w)];
      float* dst = tmp + y * w;
      std::fill(dst, dst + w, 0.0f);
      for (std::int64_t j = 0; j < taps; ++j) {
        const float kj = k[j];
        const float* src = padded + j;
        for (std::int64_t x = 0; x < w; ++x) dst[x] += kj * src[x];
      }
    }
    // Vertical: weighted sum of whole rows.
    for (std::int64_t y = 0; y < h; ++y) {
      float* dst = img + y * w;
      std::fill(dst, dst + w, 0.0f);
      for (std::int64_t j = -r; j <= r; ++j) {
        const float* src = tmp + reflect(y + j, h) * w;
        const float kj = k[j + r];
        for (std::int64_t x = 0; x < w; ++x) dst[x] += kj * src[x];
      }
    }
  }
}

void solarize(float* p, std::int64_t n, double threshold) {
  const auto t = static_cast<float>(threshold);
  for (std::int64_t i = 0; i < n; ++i)
    if (p[i] >= t) p[i] = 1.0f - p[i];
}

void normalize(float* p, std::int64_t c, std::int64_t hw, const std::vector<double>& mean,
               const std::vector<double>& std) {
  auto pick = [c](const std::vector<double>& v, std::int64_t ch, const char* what) {
    if (v.size() == 1) return v[0];
    if (static_cast<std::int64_t>(v.size()) != c)
      throw std::invalid_argument(std::string("normalisation ") + what + " has " +
                                  std::to_string(v.size()) + " values for " + std::to_string(c) +
                                  " channels");
    return v[ch];
  };
  for (std::int64_t ch = 0; ch < c; ++ch) {
    const auto m = static_cast<float>(pick(mean, ch, "mean"));
    const auto inv = static_cast<float>(1.0 / pick(std, ch, "std"));
    float* q = p + ch * hw;
    for (std::int64_t i = 0; i < hw; ++i) q[i] = (q[i] - m) * inv;
  }
}

}  // namespace wb::data
