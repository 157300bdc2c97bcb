// The TOML texts the end-to-end and configuration tests build their experiments and runs from:
// an [experiment] header, a [base] reading a slice of Fashion-MNIST with one thread and one
// worker, a small ViT on its 28 px images, and the small dense ViT most runs train. Each test
// appends what it is about.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

namespace wbtest {

// The Fashion-MNIST training images (the dataset-fashion-mnist package) the runs train on.
inline const char* const kFashion = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";

// An experiment file of `name` over `seeds`: [experiment], then `base` (the [base] tables, e.g.
// small_vit_base()), then `rest` after a blank line (keys appended to the last table of `base`,
// [[point]]s, [stage.*]).
inline std::string experiment_text(const std::string& name, const std::string& base,
                                   const std::string& rest = "", const std::string& seeds = "[0]") {
  return "[experiment]\nname = \"" + name + "\"\nseeds = " + seeds + "\n" + base + "\n" + rest;
}

// experiment_text() written to DIR/NAME.toml; returns the file.
inline std::filesystem::path write_experiment(const std::filesystem::path& dir,
                                              const std::string& name, const std::string& base,
                                              const std::string& rest = "",
                                              const std::string& seeds = "[0]") {
  const std::filesystem::path file = dir / (name + ".toml");
  std::ofstream(file, std::ios::trunc) << experiment_text(name, base, rest, seeds);
  return file;
}

// `run FILE --runs-dir RUNS` and `flags` (e.g. " --no-report"): the arguments of workbench run.
inline std::string run_args(const std::filesystem::path& file, const std::filesystem::path& runs,
                            const std::string& flags = "") {
  return "run " + file.string() + " --runs-dir " + runs.string() + flags;
}

// [base] with one thread and one worker, reading the first `train_limit` training and
// `test_limit` test images of Fashion-MNIST; `data` adds keys to [base.data].
inline std::string fashion_base(int train_limit, int test_limit, const std::string& data = "") {
  return "\n[base]\nthreads = 1\nworkers = 1\n[base.data]\ndataset = \"fashion_mnist\"\n"
         "train_limit = " +
         std::to_string(train_limit) + "\ntest_limit = " + std::to_string(test_limit) + "\n" + data;
}

// The table `table` ("base.backbone" in an experiment, "backbone" in a run's configuration) of
// a small ViT on 28 px images: patch 7, width 16, 2 heads, `depth` blocks; `more` adds keys
// (experts and their placement).
inline std::string small_vit(const std::string& table, int depth, const std::string& more = "") {
  return "[" + table +
         "]\nplugin = \"vit\"\npatch = 7\ndim = 16\ndepth = " + std::to_string(depth) +
         "\nheads = 2\n" + more;
}

// [base.backbone] and [base.gate] of a TokenMoE: the small ViT of 2 blocks, the last with 4
// experts under noisy top-k; `gate` adds keys to [base.gate].
inline std::string small_token_moe(const std::string& gate = "") {
  return small_vit("base.backbone", 2, "experts = 4\nmoe_last = 1\n") +
         "[base.gate]\nplugin = \"noisy_topk\"\n" + gate;
}

// [base.views] of the preset `recipe` ("train", "mae").
inline std::string views(const std::string& recipe) {
  return "[base.views]\nrecipe = \"" + recipe + "\"\n";
}

// MAE as a loss of the small ViT: a decoder of width 16, one block, 2 heads.
inline constexpr char kSmallMae[] =
    "[[base.losses]]\nplugin = \"mae\"\ndecoder_dim = 16\ndecoder_depth = 1\ndecoder_heads = 2\n";

// A run configuration's gate routing by cluster with large initial logits (every cluster has a
// clear expert), and a classify loss: the MoCE runs' gate and first loss.
inline constexpr char kClusterGateClassify[] =
    "[gate]\nplugin = \"cluster\"\ninit_std = 3.0\n[[losses]]\nplugin = \"classify\"\n";

// [base] of a dense ViT (patch 7, width 16, one block, 2 heads) classifying the first 256
// Fashion-MNIST training images, one thread and one worker, every step logged. `tables` (e.g.
// evaluators) comes before [base.train], which is last, so that a test appends its own train
// keys (epochs or steps, checkpoint_every).
inline std::string small_vit_base(int test_limit, const std::string& tables = "") {
  return fashion_base(256, test_limit) + views("train") + small_vit("base.backbone", 1) +
         "[[base.losses]]\nplugin = \"classify\"\n" + tables +
         "[base.train]\nbatch = 32\nwarmup_epochs = 0\nlog_every = 1\n";
}

}  // namespace wbtest
