// The file format of Python's torch.save for a dict of tensors, written and read without
// Python: a zip archive (LibTorch's PyTorchStreamWriter/Reader, the ones torch.save uses)
// holding data.pkl, a pickle (protocol 2) of a plain dict whose values rebuild tensors from the
// archive's data/<key> records through torch._utils._rebuild_tensor_v2. Only globals on the
// allow-list of torch.load(weights_only=True) are written, so every torch since 1.13 opens
// the file with its safe loader.
#pragma once

#include <filesystem>

#include "weights/state_dict.h"

namespace wb {

// Written to <file>.tmp, then renamed: a crash never leaves half a file.
void save_torch_file(const std::filesystem::path& file, const StateDict& state);

// Reads what torch.save wrote: the pickle is interpreted, never executed. Globals other than
// tensor and storage rebuilders and OrderedDict become opaque values, so a checkpoint that also
// holds an optimiser or an argparse namespace can be read for its tensors.
StateDict load_torch_file(const std::filesystem::path& file);

// True when the file starts as a zip archive (torch.save since PyTorch 1.6, and LibTorch's
// own archives).
bool is_zip_file(const std::filesystem::path& file);

}  // namespace wb
