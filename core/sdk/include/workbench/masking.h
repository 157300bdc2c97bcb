// MAE's random masking and the patch layout of its pixel targets (docs/methods.md §8), shared by
// the trainer (which draws the masks), backbones (which encode the visible patches) and losses
// and evaluators that reconstruct images.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <c10/util/Optional.h>

#include <cstdint>

namespace wb {

// Visible patches kept by MAE's masking: K = floor(N * (1 - ratio)) (MAE: int(L * (1 - r))).
std::int64_t visible_count(std::int64_t patches, double ratio);

// Per image, the K patches with the smallest of N uniform draws (MAE: argsort of noise), as
// [B, K] int64 ascending. Draws from `generator`, or from the global one (like every random draw
// of a training step) when none is given.
at::Tensor random_keep(std::int64_t batch, std::int64_t patches, double ratio,
                       const at::TensorOptions& options,
                       const c10::optional<at::Generator>& generator = c10::nullopt);

// [B, N] bool: true where a patch is masked (not in keep). keep: [B, K] int64.
at::Tensor masked_patches(const at::Tensor& keep, std::int64_t patches);

// Rows of tokens [B, N, D] picked per image by index [B, K] int64: [B, K, D].
at::Tensor gather_tokens(const at::Tensor& tokens, const at::Tensor& index);

// images [B, C, H, W] -> [B, N, p * p * C], patches row-major, each patch flattened in MAE's
// order (pixel row, pixel column, channel).
at::Tensor patchify(const at::Tensor& images, std::int64_t patch);
// The inverse of patchify for square images of `channels` channels.
at::Tensor unpatchify(const at::Tensor& patches, std::int64_t patch, std::int64_t channels);

// Per image, the PSNR in dB over its masked patches: 10 log10(1 / MSE) with MSE the mean of
// (original - reconstruction)² over every pixel and channel of the patches not in keep; pixel
// values in [0, 1] (peak 1). original, reconstruction: [B, C, H, W]; keep: [B, K]. Returns [B]
// double (+inf for an exact reconstruction).
at::Tensor masked_psnr(const at::Tensor& original, const at::Tensor& reconstruction,
                       const at::Tensor& keep, std::int64_t patch);

}  // namespace wb
