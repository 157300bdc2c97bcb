// A small JSON value: parsed from the header of a safetensors file, written as the
// architecture side-file of an export. Objects keep their members in order.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace wb::json {

struct Value {
  enum class Type { Null, Bool, Int, Real, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  std::int64_t integer = 0;  // Int: numbers written without fraction or exponent
  double real = 0;           // Real
  std::string text;          // String
  std::vector<Value> items;  // Array
  std::vector<std::pair<std::string, Value>> members;  // Object

  static Value null() { return {}; }
  static Value of(bool b);
  static Value of(std::int64_t i);
  static Value of(int i) { return of(static_cast<std::int64_t>(i)); }
  static Value of(double d);
  static Value of(std::string s);
  static Value of(const char* s) { return of(std::string(s)); }
  static Value array(std::vector<Value> items = {});
  static Value object();

  bool is_object() const { return type == Type::Object; }
  const Value* find(const std::string& key) const;  // Object member, or null
  Value& set(const std::string& key, Value value);  // Object: replaces or appends
};

// Parses a whole JSON text; throws std::runtime_error naming `origin` and the byte offset.
Value parse(const std::string& text, const std::string& origin);

// Compact JSON (indent < 0) or pretty-printed with `indent` spaces per level.
std::string dump(const Value& value, int indent = -1);

std::string quote(const std::string& text);  // a JSON string literal

}  // namespace wb::json
