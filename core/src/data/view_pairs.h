// The picture `workbench views` draws (docs/methods.md §5): for each image of a batch made by the
// loader, the original with both crop boxes, the two views with their patch grids, and the
// overlap matches between the views' patches, so that a person can check the geometry by eye.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "workbench/data.h"
#include "workbench/views.h"

namespace wb {

struct ViewPairsOptions {
  std::int64_t pairs = 8;  // images drawn
  std::int64_t grid = 0;   // patch grid g; 0 = view size / 4 (4-pixel patches)
  double lambda = 0.2;     // IoU threshold of a valid match (strictly greater)
  std::uint64_t seed = 0;  // loader seed: which images, which views
  std::int64_t scale = 0;  // upscaling factor; 0 = about 160 px per panel
};

struct ViewPairs {
  Image image;                     // RGB
  std::vector<std::string> lines;  // per image: its boxes, flips and matched patches
  std::int64_t grid = 0;           // the grid used
};

// Draws view pairs of `data` made with `recipes` (two of the same size). Rows: the original
// with view 1's crop (red) and view 2's (blue); view 1; view 2. A yellow bar marks a flipped
// view; a patch of view 1 with a valid match and its matched patch share a colour and a line.
ViewPairs draw_view_pairs(std::shared_ptr<const Dataset> data, std::vector<ViewRecipe> recipes,
                          const ViewPairsOptions& options);

}  // namespace wb
