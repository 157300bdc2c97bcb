// Patch geometry of augmented views (docs/methods.md §5): where each patch of a view's g x g grid
// lies in the original image, and how much the patches of two views overlap.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "workbench/batch.h"

namespace wb {

// Boxes (x, y, w, h) of the g*g patches of every view, in normalised original coordinates,
// row-major over the view's grid (patch (r, c) covers columns mirrored when the view was flipped).
// Returns [B, g*g, 4].
at::Tensor patch_boxes(const ViewGeometry& view, std::int64_t grid);

// IoU between every box of a [B, M, 4] and every box of b [B, N, 4]: [B, M, N].
at::Tensor box_iou(const at::Tensor& a, const at::Tensor& b);

}  // namespace wb
