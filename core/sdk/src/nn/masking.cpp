#include "workbench/masking.h"

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>
#include <string>

namespace wb {

std::int64_t visible_count(std::int64_t patches, double ratio) {
  if (!(ratio >= 0 && ratio < 1))
    throw std::invalid_argument("mask ratio " + std::to_string(ratio) + " is not in [0, 1)");
  const auto k = static_cast<std::int64_t>(std::floor(static_cast<double>(patches) * (1 - ratio)));
  if (k < 1)
    throw std::invalid_argument("mask ratio " + std::to_string(ratio) +
                                " leaves no visible patch of " + std::to_string(patches));
  return k;
}

at::Tensor random_keep(std::int64_t batch, std::int64_t patches, double ratio,
                       const at::TensorOptions& options,
                       const c10::optional<at::Generator>& generator) {
  const std::int64_t k = visible_count(patches, ratio);
  const at::Tensor noise = at::rand({batch, patches}, generator, options.dtype(at::kFloat));
  const at::Tensor order = std::get<1>(noise.sort(1));
  return std::get<0>(order.narrow(1, 0, k).sort(1));
}

at::Tensor masked_patches(const at::Tensor& keep, std::int64_t patches) {
  at::Tensor mask = at::ones({keep.size(0), patches}, keep.options().dtype(at::kBool));
  return mask.scatter(1, keep, false);
}

at::Tensor gather_tokens(const at::Tensor& tokens, const at::Tensor& index) {
  return tokens.gather(1, index.unsqueeze(-1).expand({-1, -1, tokens.size(-1)}));
}

at::Tensor patchify(const at::Tensor& images, std::int64_t patch) {
  const auto B = images.size(0), C = images.size(1), g = images.size(2) / patch;
  if (images.size(2) != g * patch || images.size(3) != g * patch)
    throw std::invalid_argument("patchify: images are not square multiples of the patch size");
  return images.reshape({B, C, g, patch, g, patch})
      .permute({0, 2, 4, 3, 5, 1})
      .reshape({B, g * g, patch * patch * C});
}

at::Tensor unpatchify(const at::Tensor& patches, std::int64_t patch, std::int64_t channels) {
  const auto B = patches.size(0), N = patches.size(1);
  const auto g = static_cast<std::int64_t>(std::llround(std::sqrt(static_cast<double>(N))));
  if (g * g != N || patches.size(2) != patch * patch * channels)
    throw std::invalid_argument("unpatchify: patches do not form a square grid of the patch size");
  return patches.reshape({B, g, g, patch, patch, channels})
      .permute({0, 5, 1, 3, 2, 4})
      .reshape({B, channels, g * patch, g * patch});
}

at::Tensor masked_psnr(const at::Tensor& original, const at::Tensor& reconstruction,
                       const at::Tensor& keep, std::int64_t patch) {
  const at::Tensor error =
      patchify((original.to(at::kDouble) - reconstruction.to(at::kDouble)).pow(2), patch);
  const at::Tensor masked = masked_patches(keep.to(error.device()), error.size(1)).to(at::kDouble);
  const at::Tensor mse = (error.mean({-1}) * masked).sum(1) / masked.sum(1);
  return -10.0 * mse.log10();
}

}  // namespace wb
