// `workbench export`: a run's trained backbone as files the Python ecosystem reads
// (docs/export.md). backbone.pt (torch.load) and backbone.safetensors hold the weights, in
// timm's VisionTransformer names for a backbone with the ViT layout (timm_names.h) and in the
// workbench's own names otherwise; backbone.json names the architecture so the model can be
// rebuilt. On request: the momentum encoder, the losses' heads (MoCo's projector and
// predictor, ...), and a few test images with their CLS features to check a rebuilt model.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace wb {

class Registry;

struct ExportOptions {
  std::filesystem::path out;  // empty: <run>/export
  bool momentum = false;      // momentum.{pt,safetensors}
  bool heads = false;         // heads.{pt,safetensors}
  std::int64_t samples = 0;   // samples.{pt,safetensors}: first N test images, CLS features
};

struct ExportResult {
  std::filesystem::path dir;
  std::vector<std::filesystem::path> files;
  bool timm_names = false;
  std::int64_t step = 0;  // the checkpoint's step
};

// Rebuilds the run's model from config.toml, loads checkpoints/last.pt and writes the files.
// Throws naming the run directory when it has no configuration or checkpoint, or when
// --momentum / --heads ask for something the run does not have.
ExportResult export_run(const std::filesystem::path& run_dir, const Registry& registry,
                        const ExportOptions& options);

}  // namespace wb
