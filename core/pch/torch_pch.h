// Precompiled once and reused by every LibTorch-using translation unit (same flags everywhere).
// Kept to what most of them need: a bigger header makes every use slower to load.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
