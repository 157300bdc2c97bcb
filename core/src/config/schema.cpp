#include "config/schema.h"

namespace wb {

namespace {

// [lo, hi): the half-open intervals ParamSpec has no named refinement for.
ParamSpec below(ParamSpec s, double hi) {
  s.hi = hi;
  s.hi_open = true;
  return s;
}

ParamSpec opt(const char* name, ParamType type, const char* doc) {
  return ParamSpec::optional(name, type, doc);
}

}  // namespace

const std::vector<ParamSpec>& run_schema() {
  static const std::vector<ParamSpec> specs = {
      ParamSpec::integer("seed", 0, "random seed; replaced by each of [experiment].seeds")
          .at_least(0),
      ParamSpec::text("device", "auto", "where to train: auto = cuda when available, else cpu")
          .one_of({"auto", "cpu", "cuda"}),
      ParamSpec::integer("threads", 0,
                         "intra-op threads per point; 0 = all cores divided by --jobs")
          .at_least(0),
      ParamSpec::integer("workers", 2, "data loader threads").at_least(0),
  };
  return specs;
}

const std::vector<ParamSpec>& data_schema() {
  static const std::vector<ParamSpec> specs = {
      ParamSpec::text("dataset", "fashion_mnist", "format of the data set")
          .one_of({"fashion_mnist", "idx", "cifar10", "cifar100", "digits", "folder"}),
      ParamSpec::text("path", "",
                      "where the data set lies; empty for fashion_mnist: "
                      "/usr/share/datasets/fashion-mnist, for digits: scikit-learn's "
                      "/usr/lib/python3/dist-packages/sklearn/datasets/data"),
      ParamSpec::integer("image_size", 0, "resize images on load to this side; 0 = native size")
          .at_least(0),
      ParamSpec::integer("num_classes", 0,
                         "class count the labels must lie below; 0 = the data set's own "
                         "(fashion_mnist, cifar10, digits: 10; cifar100: 100; folder: its class "
                         "folders; idx: the largest label + 1)")
          .at_least(0),
      below(ParamSpec::real("val_fraction", 0.0,
                            "fraction of train carved out as a class-balanced validation split")
                .at_least(0),
            1),
      ParamSpec::real("label_fraction", 1.0,
                      "class-balanced fraction of training labels kept (1 % / 10 % protocols)")
          .above(0)
          .range(0, 1),
      ParamSpec::integer("shots", 0, "k labelled images per class; 0 = all").at_least(0),
      ParamSpec::integers("classes", {}, "keep only these classes (split-A / split-B); [] = all")
          .at_least(0),
      ParamSpec::boolean("relabel", true,
                         "with a class filter: number the kept classes 0..n-1 (else keep labels)"),
      ParamSpec::integer("channels", 0,
                         "convert images to 1 (grey) or 3 (RGB) channels on load; 0 = native "
                         "(a transfer set must match the backbone's channels)")
          .range(0, 3),
      ParamSpec::integer("subset_seed", 0, "seed of the label / shot / validation subsets"),
      ParamSpec::integer("train_limit", 0, "use the first N training images only; 0 = all")
          .at_least(0),
      ParamSpec::integer("test_limit", 0, "use the first N test images only; 0 = all").at_least(0),
      ParamSpec::text("clusters", "",
                      "MoCE: the clusters.h5 of 'workbench cluster' (a file, or a run directory "
                      "holding one) whose cluster ids and centroids the run's batches and "
                      "cluster gate use; it must have been made from this very training set. "
                      "[data] only; empty = none"),
  };
  return specs;
}

const std::vector<ParamSpec>& views_schema() {
  static const std::vector<ParamSpec> specs = {
      ParamSpec::text("recipe", "auto",
                      "augmentation recipe: moco = MoCo v3's two views, train = crop + flip; "
                      "mae = MAE's crop (scale 0.2-1) + flip; "
                      "auto = moco when a loss needs two views, else train")
          .one_of({"auto", "moco", "train", "mae"}),
  };
  return specs;
}

const std::vector<ParamSpec>& view_override_schema() {
  using T = ParamType;
  static const std::vector<ParamSpec> specs = {
      opt("size", T::Int, "output side in pixels; 0 = the data set's image size").at_least(0),
      opt("random_crop", T::Bool, "RandomResizedCrop; off = the whole image resized"),
      opt("scale_min", T::Float, "smallest crop area, as a fraction of the image")
          .above(0)
          .range(0, 1),
      opt("scale_max", T::Float, "largest crop area, as a fraction of the image")
          .above(0)
          .range(0, 1),
      opt("ratio_min", T::Float, "smallest crop aspect ratio").above(0),
      opt("ratio_max", T::Float, "largest crop aspect ratio").above(0),
      opt("center_crop", T::Float, "without random crop: fraction of the resized image kept")
          .above(0)
          .range(0, 1),
      opt("flip_p", T::Float, "probability of a horizontal flip").range(0, 1),
      opt("jitter_p", T::Float, "probability of colour jitter").range(0, 1),
      opt("brightness", T::Float, "colour jitter: brightness strength").at_least(0),
      opt("contrast", T::Float, "colour jitter: contrast strength").at_least(0),
      opt("saturation", T::Float, "colour jitter: saturation strength (colour images)").at_least(0),
      opt("hue", T::Float, "colour jitter: hue strength (colour images)").range(0, 0.5),
      opt("grayscale_p", T::Float, "probability of converting to grey").range(0, 1),
      opt("blur_p", T::Float, "probability of a Gaussian blur").range(0, 1),
      opt("blur_sigma_min", T::Float, "smallest blur sigma, in pixels at 224 px").at_least(0),
      opt("blur_sigma_max", T::Float, "largest blur sigma, in pixels at 224 px").at_least(0),
      opt("solarize_p", T::Float, "probability of solarisation").range(0, 1),
      opt("solarize_threshold", T::Float, "solarisation threshold (pixel values in [0, 1])")
          .range(0, 1),
      opt("mean", T::FloatList, "per-channel normalisation mean; [] = the data set's"),
      opt("std", T::FloatList, "per-channel normalisation std; [] = the data set's").above(0),
  };
  return specs;
}

const std::vector<ParamSpec>& train_schema() {
  static const std::vector<ParamSpec> specs = {
      ParamSpec::real("epochs", 10.0,
                      "training length; steps = epochs x batches per epoch (at least 1); 0 = no "
                      "training: evaluate the initial weights ([init])")
          .at_least(0),
      ParamSpec::integer("steps", 0, "training length in steps; > 0 overrides epochs").at_least(0),
      ParamSpec::integer("batch", 256, "images per step (all processes together)").at_least(1),
      ParamSpec::real("base_lr", 5e-4, "learning rate before scaling with the batch").above(0),
      ParamSpec::text("lr_scaling", "linear",
                      "linear: lr = base_lr x batch / 256; none: lr = base_lr")
          .one_of({"linear", "none"}),
      ParamSpec::real("min_lr", 0.0, "learning rate at the end of the cosine schedule").at_least(0),
      ParamSpec::real("warmup_epochs", 1.0, "linear warm-up length in epochs").at_least(0),
      ParamSpec::real("weight_decay", 0.1, "AdamW weight decay").at_least(0),
      below(ParamSpec::reals("betas", {0.9, 0.999}, "AdamW betas (two values)").at_least(0), 1),
      ParamSpec::real("clip_grad", 0.0, "gradient norm clipping; 0 = off").at_least(0),
      ParamSpec::text("precision", "fp32",
                      "fp32; bf16: forward passes and losses under bf16 autocast (matrix "
                      "products in bf16; fp32 weights, optimizer, softmaxes and InfoNCE)")
          .one_of({"fp32", "bf16"}),
      ParamSpec::integer("log_every", 10, "steps between progress lines and scalar series points")
          .at_least(1),
      ParamSpec::integer("stats_every", 50, "steps between routing statistics").at_least(1),
      ParamSpec::integer("checkpoint_every", 0, "steps between checkpoints; 0 = once per epoch")
          .at_least(0),
      ParamSpec::real("momentum", 0.99,
                      "m0 of the momentum encoder (losses that ask for one): m rises from m0 to 1 "
                      "on a half cosine over the run")
          .range(0, 1),
      ParamSpec::real("temperature", 0.2,
                      "tau of every contrastive term: MoCo's ctr and OGAR's InfoNCE (CR-MoE uses "
                      "the same value for both)")
          .above(0),
  };
  return specs;
}

const std::vector<ParamSpec>& init_schema() {
  static const std::vector<ParamSpec> specs = {
      ParamSpec::text("from", "",
                      "start the backbone from these weights: a state dict (.pt of torch.save, "
                      ".safetensors; timm's names for a ViT), a workbench export, or a run "
                      "directory or its checkpoint; empty = random initialisation; a dense "
                      "MLP whose block is a MoE layer here starts every expert of it (MoCE)"),
      ParamSpec::real("expert_noise", 0.01,
                      "dense MLP -> experts: Gaussian noise added to each expert's copy of the "
                      "dense weights, std = expert_noise x the dense weight's std (biases are "
                      "copied exactly)")
          .at_least(0),
      ParamSpec::texts("allow_missing", {},
                       "glob patterns of backbone weights the source may lack (they keep their "
                       "initial values); [\"*\"] allows any"),
      ParamSpec::texts("allow_unexpected", {},
                       "glob patterns of source weights the backbone has no place for (ignored), "
                       "e.g. [\"head.*\"]"),
  };
  return specs;
}

std::vector<CoreSection> core_sections() {
  return {
      {"", "top level of the configuration", &run_schema()},
      {"data", "the training data set", &data_schema()},
      {"datasets.<name>", "further named data sets, for evaluators (same keys as [data])",
       &data_schema()},
      {"views", "augmentation of the training views", &views_schema()},
      {"views.view1", "overrides of the recipe's first view (ViewRecipe fields)",
       &view_override_schema()},
      {"views.view2", "overrides of the recipe's second view (ViewRecipe fields)",
       &view_override_schema()},
      {"train", "optimisation and logging", &train_schema()},
      {"init", "initial weights of the backbone (only for a fresh start, never on resume)",
       &init_schema()},
  };
}

}  // namespace wb
