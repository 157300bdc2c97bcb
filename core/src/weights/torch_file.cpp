#include "weights/torch_file.h"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>

#include "store/atomic_file.h"

namespace wb {

namespace fs = std::filesystem;

namespace {

// Storage classes of torch.save, by element type.
struct StorageName {
  at::ScalarType type;
  const char* name;
};

const StorageName kStorages[] = {
    {at::kDouble, "DoubleStorage"},     {at::kFloat, "FloatStorage"}, {at::kHalf, "HalfStorage"},
    {at::kBFloat16, "BFloat16Storage"}, {at::kLong, "LongStorage"},   {at::kInt, "IntStorage"},
    {at::kShort, "ShortStorage"},       {at::kChar, "CharStorage"},   {at::kByte, "ByteStorage"},
    {at::kBool, "BoolStorage"},
};

// ---- writing ----------------------------------------------------------------------------

class PickleWriter {
 public:
  std::string out;

  void op(char c) { out += c; }
  void global(const char* module, const char* name) {
    op('c');
    out += module;
    out += '\n';
    out += name;
    out += '\n';
  }
  void text(const std::string& s) {  // BINUNICODE: 4-byte little-endian length, UTF-8
    op('X');
    le(static_cast<std::uint64_t>(s.size()), 4);
    out += s;
  }
  void integer(std::int64_t v) {
    if (v >= 0 && v < 256) {
      op('K');
      le(static_cast<std::uint64_t>(v), 1);
    } else if (v >= 0 && v < 65536) {
      op('M');
      le(static_cast<std::uint64_t>(v), 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      le(static_cast<std::uint64_t>(static_cast<std::uint32_t>(static_cast<std::int32_t>(v))), 4);
    } else {
      op('\x8a');  // LONG1: 8 bytes of two's complement
      le(8, 1);
      le(static_cast<std::uint64_t>(v), 8);
    }
  }
  void int_tuple(c10::IntArrayRef values) {
    op('(');
    for (const auto v : values) integer(v);
    op('t');
  }

 private:
  void le(std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
  }
};

const char* storage_name(at::ScalarType type) {
  for (const auto& s : kStorages)
    if (s.type == type) return s.name;
  throw std::runtime_error(std::string("torch.save format: no storage class for ") +
                           c10::toString(type));
}

// torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks), the
// storage given by a persistent id ("storage", torch.<T>Storage, key, "cpu", numel) that
// torch.load resolves to the archive's record data/<key>.
void write_tensor(PickleWriter& w, const at::Tensor& t, const std::string& key) {
  w.global("torch._utils", "_rebuild_tensor_v2");
  w.op('(');
  w.op('(');
  w.text("storage");
  w.global("torch", storage_name(t.scalar_type()));
  w.text(key);
  w.text("cpu");
  w.integer(t.numel());
  w.op('t');
  w.op('Q');  // BINPERSID
  w.integer(0);
  w.int_tuple(t.sizes());
  w.int_tuple(t.strides());
  w.op('\x89');                            // requires_grad = False
  w.global("collections", "OrderedDict");  // no backward hooks
  w.op(')');
  w.op('R');
  w.op('t');
  w.op('R');
}

// ---- reading ----------------------------------------------------------------------------

struct Object;
using Ref = std::shared_ptr<Object>;

struct Object {
  enum class Kind {
    None,
    Bool,
    Int,
    Float,
    String,
    Tuple,
    List,
    Dict,
    Global,
    Storage,
    Tensor,
    Opaque
  };
  Kind kind = Kind::None;
  bool boolean = false;
  std::int64_t integer = 0;
  double real = 0;
  std::string text;  // String; Global: "module.name"; Storage: record key; Opaque: what made it
  std::vector<Ref> items;                    // Tuple, List
  std::vector<std::pair<Ref, Ref>> entries;  // Dict
  at::ScalarType dtype = at::kFloat;         // Storage
  at::Tensor tensor;                         // Tensor
};

Ref make(Object::Kind kind) {
  auto o = std::make_shared<Object>();
  o->kind = kind;
  return o;
}

const char* kind_name(Object::Kind k) {
  switch (k) {
    case Object::Kind::None:
      return "None";
    case Object::Kind::Bool:
      return "bool";
    case Object::Kind::Int:
      return "int";
    case Object::Kind::Float:
      return "float";
    case Object::Kind::String:
      return "str";
    case Object::Kind::Tuple:
      return "tuple";
    case Object::Kind::List:
      return "list";
    case Object::Kind::Dict:
      return "dict";
    case Object::Kind::Global:
      return "global";
    case Object::Kind::Storage:
      return "storage";
    case Object::Kind::Tensor:
      return "tensor";
    case Object::Kind::Opaque:
      return "object";
  }
  return "?";
}

// Interprets the pickle opcodes torch.save (protocol 2) and Python's pickler up to protocol 4
// produce for state dicts. Nothing is imported or called: known globals are rebuilt here,
// others become opaque objects.
class PickleReader {
 public:
  PickleReader(const std::string& bytes, caffe2::serialize::PyTorchStreamReader& archive,
               const fs::path& file)
      : s_(bytes), archive_(archive), file_(file) {}

  Ref run() {
    for (;;) {
      const auto opcode = static_cast<unsigned char>(byte());
      if (opcode == '.') {
        if (stack_.size() != 1) fail("the pickle does not end with exactly one value");
        return stack_.back();
      }
      step(opcode);
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(file_.string() + ": cannot read the pickle (data.pkl) at byte " +
                             std::to_string(pos_) + ": " + what);
  }

  char byte() {
    if (pos_ >= s_.size()) fail("unexpected end");
    return s_[pos_++];
  }
  std::uint64_t le(int bytes) {
    if (pos_ + static_cast<std::size_t>(bytes) > s_.size()) fail("unexpected end");
    std::uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i)
      v = (v << 8) | static_cast<unsigned char>(s_[pos_ + static_cast<std::size_t>(i)]);
    pos_ += static_cast<std::size_t>(bytes);
    return v;
  }
  std::string take(std::uint64_t n) {
    if (n > s_.size() - pos_) fail("a string runs past the end");
    std::string out = s_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  std::string line() {
    const auto end = s_.find('\n', pos_);
    if (end == std::string::npos) fail("unterminated GLOBAL");
    std::string out = s_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return out;
  }

  Ref pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back()))
      fail("stack underflow");
    Ref r = stack_.back();
    stack_.pop_back();
    return r;
  }
  Ref& top() {
    if (stack_.empty()) fail("stack underflow");
    return stack_.back();
  }
  std::vector<Ref> pop_mark() {
    if (marks_.empty()) fail("no MARK");
    const std::size_t at = marks_.back();
    marks_.pop_back();
    std::vector<Ref> items(stack_.begin() + static_cast<std::ptrdiff_t>(at), stack_.end());
    stack_.resize(at);
    return items;
  }
  void push(Ref r) { stack_.push_back(std::move(r)); }
  void push_int(std::int64_t v) {
    Ref r = make(Object::Kind::Int);
    r->integer = v;
    push(r);
  }
  void push_text(std::string s) {
    Ref r = make(Object::Kind::String);
    r->text = std::move(s);
    push(r);
  }
  Ref tuple(std::vector<Ref> items) {
    Ref r = make(Object::Kind::Tuple);
    r->items = std::move(items);
    return r;
  }
  void set_items(const Ref& dict, const std::vector<Ref>& kv) {
    if (kv.size() % 2) fail("SETITEMS with an odd number of values");
    if (dict->kind != Object::Kind::Dict) return;  // BUILD-like state of an opaque object
    for (std::size_t i = 0; i < kv.size(); i += 2) dict->entries.emplace_back(kv[i], kv[i + 1]);
  }

  void step(unsigned char opcode) {
    switch (opcode) {
      case 0x80:
        byte();
        return;  // PROTO
      case 0x95:
        le(8);
        return;  // FRAME
      case '(':
        marks_.push_back(stack_.size());
        return;
      case ')':
        push(tuple({}));
        return;
      case 't':
        push(tuple(pop_mark()));
        return;
      case 0x85: {
        auto a = pop();
        push(tuple({a}));
        return;
      }
      case 0x86: {
        auto b = pop(), a = pop();
        push(tuple({a, b}));
        return;
      }
      case 0x87: {
        auto c = pop(), b = pop(), a = pop();
        push(tuple({a, b, c}));
        return;
      }
      case ']':
        push(make(Object::Kind::List));
        return;
      case 'l': {
        auto r = make(Object::Kind::List);
        r->items = pop_mark();
        push(r);
        return;
      }
      case 'a': {
        auto v = pop();
        top()->items.push_back(v);
        return;
      }
      case 'e': {
        auto vs = pop_mark();
        auto& l = top()->items;
        l.insert(l.end(), vs.begin(), vs.end());
        return;
      }
      case '}':
        push(make(Object::Kind::Dict));
        return;
      case 'd': {
        auto r = make(Object::Kind::Dict);
        set_items(r, pop_mark());
        push(r);
        return;
      }
      case 's': {
        auto v = pop(), k = pop();
        set_items(top(), {k, v});
        return;
      }
      case 'u': {
        auto kv = pop_mark();
        set_items(top(), kv);
        return;
      }
      case 'N':
        push(make(Object::Kind::None));
        return;
      case 0x88:
      case 0x89: {
        auto r = make(Object::Kind::Bool);
        r->boolean = opcode == 0x88;
        push(r);
        return;
      }
      case 'K':
        push_int(static_cast<std::int64_t>(le(1)));
        return;
      case 'M':
        push_int(static_cast<std::int64_t>(le(2)));
        return;
      case 'J':
        push_int(static_cast<std::int32_t>(static_cast<std::uint32_t>(le(4))));
        return;
      case 0x8a: {  // LONG1
        const auto n = static_cast<int>(le(1));
        if (n > 8) fail("an integer wider than 64 bits");
        std::uint64_t v = n ? le(n) : 0;
        if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~std::uint64_t{0} << (8 * n);  // sign
        push_int(static_cast<std::int64_t>(v));
        return;
      }
      case 'G': {  // BINFLOAT, big-endian
        std::uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | static_cast<unsigned char>(byte());
        auto r = make(Object::Kind::Float);
        std::memcpy(&r->real, &bits, 8);
        push(r);
        return;
      }
      case 'X':
        push_text(take(le(4)));
        return;  // BINUNICODE
      case 0x8c:
        push_text(take(le(1)));
        return;  // SHORT_BINUNICODE
      case 0x8d:
        push_text(take(le(8)));
        return;  // BINUNICODE8
      case 'U':
        push_text(take(le(1)));
        return;  // SHORT_BINSTRING
      case 'T':
        push_text(take(le(4)));
        return;  // BINSTRING
      case 'C':
        push_text(take(le(1)));
        return;  // SHORT_BINBYTES
      case 'B':
        push_text(take(le(4)));
        return;  // BINBYTES
      case 'c': {
        const std::string module = line();
        auto r = make(Object::Kind::Global);
        r->text = module + "." + line();
        push(r);
        return;
      }
      case 0x93: {  // STACK_GLOBAL
        auto name = pop(), module = pop();
        auto r = make(Object::Kind::Global);
        r->text = module->text + "." + name->text;
        push(r);
        return;
      }
      case 'q':
        memo_[le(1)] = top();
        return;
      case 'r':
        memo_[le(4)] = top();
        return;
      case 0x94:
        memo_[memo_.size()] = top();
        return;  // MEMOIZE
      case 'h':
        push(memo(le(1)));
        return;
      case 'j':
        push(memo(le(4)));
        return;
      case '0':
        pop();
        return;
      case '1':
        pop_mark();
        return;
      case '2':
        push(top());
        return;
      case 'Q':
        push(persistent(pop()));
        return;
      case 'R': {
        auto args = pop(), fn = pop();
        push(call(fn, args));
        return;
      }
      case 0x81: {
        auto args = pop(), cls = pop();
        push(call(cls, args));
        return;
      }  // NEWOBJ
      case 'b':
        pop();
        return;  // BUILD: the state of an OrderedDict (_metadata) or an object
      default:
        break;
    }
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02x", opcode);
    fail(std::string("unsupported pickle opcode ") + hex);
  }

  Ref memo(std::uint64_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) fail("memo key " + std::to_string(key) + " was never stored");
    return it->second;
  }

  // ("storage", torch.<T>Storage, key, location, numel)
  Ref persistent(const Ref& pid) {
    if (pid->kind != Object::Kind::Tuple || pid->items.size() < 5 ||
        pid->items[0]->text != "storage" || pid->items[1]->kind != Object::Kind::Global)
      fail("a persistent id that is not a tensor storage");
    const std::string cls = pid->items[1]->text;
    auto r = make(Object::Kind::Storage);
    bool known = false;
    for (const auto& s : kStorages)
      if (cls == std::string("torch.") + s.name) r->dtype = s.type, known = true;
    if (!known) fail("unsupported storage class " + cls);
    r->text = pid->items[2]->text;
    return r;
  }

  at::Tensor storage_tensor(const Object& storage) {
    auto it = storages_.find(storage.text);
    if (it != storages_.end()) return it->second;
    const std::string record = "data/" + storage.text;
    if (!archive_.hasRecord(record)) fail("the archive has no record " + record);
    auto [data, size] = archive_.getRecord(record);
    const auto element = c10::elementSize(storage.dtype);
    if (size % element) fail("record " + record + " is not a whole number of elements");
    at::Tensor t = at::empty({static_cast<std::int64_t>(size / element)},
                             at::TensorOptions().dtype(storage.dtype));
    if (size) std::memcpy(t.data_ptr(), data.get(), size);
    storages_[storage.text] = t;
    return t;
  }

  std::vector<std::int64_t> ints(const Ref& tuple_ref, const char* what) {
    std::vector<std::int64_t> out;
    if (tuple_ref->kind != Object::Kind::Tuple && tuple_ref->kind != Object::Kind::List)
      fail(std::string("tensor ") + what + " is not a tuple");
    for (const auto& i : tuple_ref->items) {
      if (i->kind != Object::Kind::Int)
        fail(std::string("tensor ") + what + " holds a non-integer");
      out.push_back(i->integer);
    }
    return out;
  }

  Ref call(const Ref& fn, const Ref& args) {
    if (fn->kind != Object::Kind::Global || args->kind != Object::Kind::Tuple) {
      auto r = make(Object::Kind::Opaque);
      r->text = "a call of a non-global";
      return r;
    }
    const std::string& name = fn->text;
    const auto& a = args->items;
    if (name == "collections.OrderedDict" || name == "builtins.dict")
      return make(Object::Kind::Dict);
    if ((name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") &&
        a.size() >= 4 && a[0]->kind == Object::Kind::Storage && a[1]->kind == Object::Kind::Int) {
      const at::Tensor storage = storage_tensor(*a[0]);
      const auto sizes = ints(a[2], "size"), strides = ints(a[3], "stride");
      if (sizes.size() != strides.size()) fail("tensor size and stride differ in length");
      std::int64_t last = a[1]->integer;  // the furthest element the view reaches
      for (std::size_t i = 0; i < sizes.size(); ++i)
        if (sizes[i] == 0) last = -1;
      if (last >= 0)
        for (std::size_t i = 0; i < sizes.size(); ++i) last += (sizes[i] - 1) * strides[i];
      if (last >= storage.numel()) fail("a tensor reaches past the end of its storage");
      auto r = make(Object::Kind::Tensor);
      r->tensor = storage.as_strided(sizes, strides, a[1]->integer).clone();
      return r;
    }
    // Parameters and tensor subclasses wrap a tensor rebuilt by an inner call.
    if ((name == "torch._utils._rebuild_parameter" ||
         name == "torch._utils._rebuild_parameter_with_state" ||
         name == "torch.nn.parameter.Parameter") &&
        !a.empty() && a[0]->kind == Object::Kind::Tensor)
      return a[0];
    if (name == "torch._tensor._rebuild_from_type_v2" && a.size() >= 3) return call(a[0], a[2]);
    auto r = make(Object::Kind::Opaque);
    r->text = name;
    return r;
  }

  const std::string& s_;
  caffe2::serialize::PyTorchStreamReader& archive_;
  const fs::path& file_;
  std::size_t pos_ = 0;
  std::vector<Ref> stack_;
  std::vector<std::size_t> marks_;
  std::map<std::uint64_t, Ref> memo_;
  std::map<std::string, at::Tensor> storages_;
};

bool has_tensor(const Object& dict) {
  for (const auto& [k, v] : dict.entries)
    if (v->kind == Object::Kind::Tensor) return true;
  return false;
}

const Object* entry(const Object& dict, const std::string& key) {
  for (const auto& [k, v] : dict.entries)
    if (k->kind == Object::Kind::String && k->text == key) return v.get();
  return nullptr;
}

}  // namespace

bool is_zip_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  char magic[4] = {0};
  return in.read(magic, 4) && std::memcmp(magic, "PK\x03\x04", 4) == 0;
}

void save_torch_file(const fs::path& file, const StateDict& state) {
  PickleWriter pickle;
  pickle.op('\x80');
  pickle.op('\x02');
  pickle.op('}');
  std::vector<at::Tensor> tensors;
  if (!state.empty()) {
    pickle.op('(');
    for (const auto& [name, tensor] : state) {
      tensors.push_back(tensor.detach().to(at::kCPU).contiguous());
      pickle.text(name);
      write_tensor(pickle, tensors.back(), std::to_string(tensors.size() - 1));
    }
    pickle.op('u');
  }
  pickle.op('.');

  std::string zip;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&zip](const void* data, size_t n) {
      zip.append(static_cast<const char*>(data), n);
      return n;
    });
    writer.writeRecord("data.pkl", pickle.out.data(), pickle.out.size());
    writer.writeRecord("byteorder", "little", 6);
    for (std::size_t i = 0; i < tensors.size(); ++i)
      writer.writeRecord("data/" + std::to_string(i), tensors[i].data_ptr(), tensors[i].nbytes());
    writer.writeEndOfFile();
  }
  write_file_atomic(file, zip);
}

StateDict load_torch_file(const fs::path& file) {
  if (!is_zip_file(file))
    throw std::runtime_error(file.string() +
                             ": not a torch.save file (a zip archive; files of PyTorch before 1.6 "
                             "must be saved again with a newer torch.save)");
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> archive;
  std::string pickle;
  try {
    archive = std::make_unique<caffe2::serialize::PyTorchStreamReader>(file.string());
    if (!archive->hasRecord("data.pkl")) throw std::runtime_error("it has no data.pkl record");
    if (archive->hasRecord("byteorder")) {
      auto [data, size] = archive->getRecord("byteorder");
      if (std::string(static_cast<const char*>(data.get()), size) != "little")
        throw std::runtime_error("its tensors are big-endian");
    }
    auto [data, size] = archive->getRecord("data.pkl");
    pickle.assign(static_cast<const char*>(data.get()), size);
  } catch (const c10::Error& e) {
    throw std::runtime_error(file.string() +
                             ": not a readable torch.save archive: " + e.what_without_backtrace());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(file.string() + ": not a torch.save state dict: " + e.what());
  }
  const Ref root = PickleReader(pickle, *archive, file).run();
  if (root->kind != Object::Kind::Dict)
    throw std::runtime_error(file.string() + ": holds a " + kind_name(root->kind) +
                             ", not a dict of tensors (a state dict)");
  const Object* dict = root.get();
  if (!has_tensor(*dict)) {
    for (const char* key : {"state_dict", "model"})
      if (const Object* inner = entry(*root, key); inner && inner->kind == Object::Kind::Dict) {
        dict = inner;
        break;
      }
  }
  StateDict state;
  for (const auto& [k, v] : dict->entries) {
    if (k->kind != Object::Kind::String)
      throw std::runtime_error(file.string() + ": a key of the state dict is a " +
                               kind_name(k->kind) + ", not a string");
    if (v->kind != Object::Kind::Tensor)
      throw std::runtime_error(file.string() + ": '" + k->text + "' holds a " + kind_name(v->kind) +
                               (v->kind == Object::Kind::Opaque ? " (" + v->text + ")" : "") +
                               ", not a tensor");
    state.emplace_back(k->text, v->tensor);
  }
  return state;
}

}  // namespace wb
