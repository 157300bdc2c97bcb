// A training batch: one or more augmented views of the same images, each with the geometry
// that produced it, so that losses can match patches across views.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <vector>

namespace wb {

struct ViewGeometry {
  at::Tensor box;   // [B, 4] float (x, y, w, h) of the crop in normalised original coordinates
  at::Tensor flip;  // [B] bool: the view was mirrored horizontally after cropping
};

struct Batch {
  std::vector<at::Tensor> views;       // each [B, C, H, W] float, normalised
  std::vector<ViewGeometry> geometry;  // one per view
  at::Tensor labels;                   // [B] int64 (or undefined for unlabelled data)
  at::Tensor index;                    // [B] int64: position of each image in its data set
  at::Tensor cluster;                  // [B] int64 cluster ids (MoCE) or undefined

  std::int64_t size() const { return views.empty() ? 0 : views.front().size(0); }
  // Every defined tensor on `device`; pinned CPU tensors are copied to CUDA without blocking
  // (the copy is ordered on the current stream before any kernel that reads it).
  Batch to(c10::Device device) const;
  // Every defined CPU tensor in page-locked memory (needs CUDA).
  Batch pinned() const;
};

}  // namespace wb
