// Patch boxes of views and box IoU (docs/methods.md §5), as whole-tensor ATen operations.
#include "workbench/geometry.h"

#include <ATen/ATen.h>

#include <stdexcept>

namespace wb {

at::Tensor patch_boxes(const ViewGeometry& view, std::int64_t grid) {
  if (grid <= 0) throw std::invalid_argument("patch_boxes: grid must be > 0");
  const at::Tensor box = view.box.to(at::kFloat);
  if (box.dim() != 2 || box.size(1) != 4)
    throw std::invalid_argument("patch_boxes: box must be [B, 4]");
  const std::int64_t B = box.size(0), P = grid * grid;
  const auto opts = box.options();
  // Patch p = r * grid + c: local (x, y) = (c / g, r / g) of the crop.
  const at::Tensor p = at::arange(P, opts.dtype(at::kLong));
  const at::Tensor col = at::remainder(p, grid).to(at::kFloat).unsqueeze(0);  // [1, P]
  const at::Tensor row = at::floor_divide(p, grid).to(at::kFloat).unsqueeze(0);
  // Flipped view: its column c shows crop column g - 1 - c.
  at::Tensor flip = view.flip.defined() ? view.flip.to(box.device()).to(at::kBool).reshape({B, 1})
                                        : at::zeros({B, 1}, opts.dtype(at::kBool));
  const at::Tensor src_col = at::where(flip, (grid - 1) - col, col);  // [B, P]
  const float inv = 1.0f / static_cast<float>(grid);
  const at::Tensor bx = box.select(1, 0).unsqueeze(1), by = box.select(1, 1).unsqueeze(1);
  const at::Tensor bw = box.select(1, 2).unsqueeze(1), bh = box.select(1, 3).unsqueeze(1);
  const at::Tensor x = bx + src_col * inv * bw;
  const at::Tensor y = by + row.expand({B, P}) * inv * bh;
  return at::stack({x, y, (bw * inv).expand({B, P}), (bh * inv).expand({B, P})}, 2);
}

at::Tensor box_iou(const at::Tensor& a, const at::Tensor& b) {
  if (a.dim() != 3 || b.dim() != 3 || a.size(2) != 4 || b.size(2) != 4 || a.size(0) != b.size(0))
    throw std::invalid_argument("box_iou: expects [B, M, 4] and [B, N, 4]");
  const at::Tensor ax0 = a.select(2, 0).unsqueeze(2), ay0 = a.select(2, 1).unsqueeze(2);
  const at::Tensor aw = a.select(2, 2).unsqueeze(2), ah = a.select(2, 3).unsqueeze(2);
  const at::Tensor bx0 = b.select(2, 0).unsqueeze(1), by0 = b.select(2, 1).unsqueeze(1);
  const at::Tensor bw = b.select(2, 2).unsqueeze(1), bh = b.select(2, 3).unsqueeze(1);
  const at::Tensor iw = (at::minimum(ax0 + aw, bx0 + bw) - at::maximum(ax0, bx0)).clamp_min(0);
  const at::Tensor ih = (at::minimum(ay0 + ah, by0 + bh) - at::maximum(ay0, by0)).clamp_min(0);
  const at::Tensor inter = iw * ih;
  const at::Tensor uni = aw * ah + bw * bh - inter;
  // Degenerate (zero-area) pairs have IoU 0, not NaN.
  return at::where(uni > 0, inter / uni.clamp_min(1e-12), at::zeros_like(inter));
}

}  // namespace wb
