// The safetensors format (Hugging Face), written and read here without its library: an 8-byte
// little-endian header length N, N bytes of JSON ({"name": {"dtype": "F32", "shape": [...],
// "data_offsets": [begin, end]}, ..., "__metadata__": {"key": "text"}}, padded with spaces to
// a multiple of 8), then the tensors' raw little-endian bytes, back to back in header order.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "weights/state_dict.h"

namespace wb {

// Written to <file>.tmp, then renamed. Metadata values are strings, as the format requires.
void save_safetensors(const std::filesystem::path& file, const StateDict& state,
                      const std::map<std::string, std::string>& metadata = {});

// Throws naming the file for a truncated file, a malformed header, an unknown dtype, or
// offsets that do not tile the data exactly.
StateDict load_safetensors(const std::filesystem::path& file,
                           std::map<std::string, std::string>* metadata = nullptr);

bool is_safetensors_file(const std::filesystem::path& file);

}  // namespace wb
