#include "weights/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "store/atomic_file.h"
#include "weights/json.h"

namespace wb {

namespace fs = std::filesystem;

namespace {

struct DtypeName {
  at::ScalarType type;
  const char* name;
};

const DtypeName kDtypes[] = {
    {at::kDouble, "F64"}, {at::kFloat, "F32"}, {at::kHalf, "F16"},  {at::kBFloat16, "BF16"},
    {at::kLong, "I64"},   {at::kInt, "I32"},   {at::kShort, "I16"}, {at::kChar, "I8"},
    {at::kByte, "U8"},    {at::kBool, "BOOL"},
};

const char* dtype_name(at::ScalarType type) {
  for (const auto& d : kDtypes)
    if (d.type == type) return d.name;
  throw std::runtime_error(std::string("safetensors: no dtype for ") + c10::toString(type));
}

void put_u64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

std::uint64_t get_u64(const std::string& in) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | static_cast<unsigned char>(in[static_cast<std::size_t>(i)]);
  return v;
}

[[noreturn]] void bad(const fs::path& file, const std::string& what) {
  throw std::runtime_error(file.string() + ": not a valid safetensors file: " + what);
}

std::int64_t non_negative(const json::Value& v, const fs::path& file, const std::string& what) {
  if (v.type != json::Value::Type::Int || v.integer < 0)
    bad(file, what + " must be a non-negative integer");
  return v.integer;
}

}  // namespace

void save_safetensors(const fs::path& file, const StateDict& state,
                      const std::map<std::string, std::string>& metadata) {
  json::Value header = json::Value::object();
  if (!metadata.empty()) {
    json::Value meta = json::Value::object();
    for (const auto& [k, v] : metadata) meta.set(k, json::Value::of(v));
    header.set("__metadata__", std::move(meta));
  }
  std::string data;
  for (const auto& [name, tensor] : state) {
    if (name == "__metadata__") throw std::runtime_error("safetensors: '__metadata__' is reserved");
    const at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    json::Value shape = json::Value::array();
    for (const auto s : t.sizes())
      shape.items.push_back(json::Value::of(static_cast<std::int64_t>(s)));
    const auto begin = static_cast<std::int64_t>(data.size());
    // The hosts this runs on are little-endian, as the format's data is.
    data.append(static_cast<const char*>(t.data_ptr()), t.nbytes());
    json::Value entry = json::Value::object();
    entry.set("dtype", json::Value::of(dtype_name(t.scalar_type())));
    entry.set("shape", std::move(shape));
    entry.set("data_offsets",
              json::Value::array({json::Value::of(begin),
                                  json::Value::of(static_cast<std::int64_t>(data.size()))}));
    if (header.find(name))
      throw std::runtime_error("safetensors: tensor '" + name + "' given twice");
    header.set(name, std::move(entry));
  }
  std::string text = json::dump(header);
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  std::string out;
  out.reserve(8 + text.size() + data.size());
  put_u64(out, text.size());
  out += text;
  out += data;
  write_file_atomic(file, out);
}

bool is_safetensors_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  char head[9] = {0};
  if (!in.read(head, 9)) return false;
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(head[i]);
  std::error_code ec;
  const auto size = fs::file_size(file, ec);
  return !ec && n >= 2 && 8 + n <= size && head[8] == '{';
}

StateDict load_safetensors(const fs::path& file, std::map<std::string, std::string>* metadata) {
  const std::string bytes = read_file(file);
  if (bytes.size() < 8) bad(file, "shorter than its 8-byte header length");
  const std::uint64_t n = get_u64(bytes);
  if (n > bytes.size() - 8)
    bad(file, "header length " + std::to_string(n) + " runs past the end of the file (" +
                  std::to_string(bytes.size()) + " bytes)");
  const json::Value header = json::parse(bytes.substr(8, n), file.string() + " (header)");
  if (!header.is_object()) bad(file, "the header is not a JSON object");
  const std::size_t data_start = 8 + n;
  const std::size_t data_size = bytes.size() - data_start;

  StateDict state;
  std::vector<std::pair<std::int64_t, std::int64_t>> spans;
  for (const auto& [name, entry] : header.members) {
    if (name == "__metadata__") {
      if (!entry.is_object()) bad(file, "__metadata__ is not an object");
      if (metadata)
        for (const auto& [k, v] : entry.members) {
          if (v.type != json::Value::Type::String)
            bad(file, "__metadata__." + k + " is not a string");
          (*metadata)[k] = v.text;
        }
      continue;
    }
    const json::Value* dtype = entry.is_object() ? entry.find("dtype") : nullptr;
    const json::Value* shape = entry.is_object() ? entry.find("shape") : nullptr;
    const json::Value* offsets = entry.is_object() ? entry.find("data_offsets") : nullptr;
    if (!dtype || dtype->type != json::Value::Type::String || !shape ||
        shape->type != json::Value::Type::Array || !offsets ||
        offsets->type != json::Value::Type::Array || offsets->items.size() != 2)
      bad(file, "tensor '" + name + "' lacks dtype, shape or data_offsets [begin, end]");
    at::ScalarType type = at::kFloat;
    bool known = false;
    for (const auto& d : kDtypes)
      if (dtype->text == d.name) type = d.type, known = true;
    if (!known) bad(file, "tensor '" + name + "' has the unsupported dtype " + dtype->text);
    std::vector<std::int64_t> sizes;
    std::int64_t numel = 1;
    for (const auto& s : shape->items) {
      sizes.push_back(non_negative(s, file, "a shape entry of '" + name + "'"));
      numel *= sizes.back();
    }
    const std::int64_t begin =
        non_negative(offsets->items[0], file, "data_offsets of '" + name + "'");
    const std::int64_t end =
        non_negative(offsets->items[1], file, "data_offsets of '" + name + "'");
    const std::int64_t expected = numel * static_cast<std::int64_t>(c10::elementSize(type));
    if (end < begin || end - begin != expected)
      bad(file, "tensor '" + name + "' spans bytes [" + std::to_string(begin) + ", " +
                    std::to_string(end) + ") but its shape and dtype need " +
                    std::to_string(expected));
    if (static_cast<std::uint64_t>(end) > data_size)
      bad(file, "tensor '" + name + "' ends at byte " + std::to_string(end) +
                    " of a data section of " + std::to_string(data_size) +
                    " bytes (truncated file?)");
    at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(type));
    if (expected > 0)
      std::memcpy(t.data_ptr(), bytes.data() + data_start + begin,
                  static_cast<std::size_t>(expected));
    state.emplace_back(name, std::move(t));
    spans.emplace_back(begin, end);
  }
  // The format requires the tensors to tile the data section exactly, without gaps or overlap.
  std::sort(spans.begin(), spans.end());
  std::int64_t at = 0;
  for (const auto& [b, e] : spans) {
    if (b != at)
      bad(file, "the tensors' byte ranges leave a gap or overlap at byte " + std::to_string(at));
    at = e;
  }
  if (static_cast<std::uint64_t>(at) != data_size)
    bad(file, "the data section has " + std::to_string(data_size) +
                  " bytes but the tensors cover " + std::to_string(at));
  return state;
}

}  // namespace wb
