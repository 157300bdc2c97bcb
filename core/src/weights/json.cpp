#include "weights/json.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "workbench/params.h"

namespace wb::json {

Value Value::of(bool b) {
  Value v;
  v.type = Type::Bool;
  v.boolean = b;
  return v;
}

Value Value::of(std::int64_t i) {
  Value v;
  v.type = Type::Int;
  v.integer = i;
  return v;
}

Value Value::of(double d) {
  Value v;
  v.type = Type::Real;
  v.real = d;
  return v;
}

Value Value::of(std::string s) {
  Value v;
  v.type = Type::String;
  v.text = std::move(s);
  return v;
}

Value Value::array(std::vector<Value> items) {
  Value v;
  v.type = Type::Array;
  v.items = std::move(items);
  return v;
}

Value Value::object() {
  Value v;
  v.type = Type::Object;
  return v;
}

const Value* Value::find(const std::string& key) const {
  for (const auto& [k, v] : members)
    if (k == key) return &v;
  return nullptr;
}

Value& Value::set(const std::string& key, Value value) {
  for (auto& [k, v] : members)
    if (k == key) return v = std::move(value);
  members.emplace_back(key, std::move(value));
  return members.back().second;
}

namespace {

class Parser {
 public:
  Parser(const std::string& text, const std::string& origin) : s_(text), origin_(origin) {}

  Value document() {
    Value v = value(0);
    skip_space();
    if (pos_ != s_.size()) fail("unexpected text after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(origin_ + ": malformed JSON at byte " + std::to_string(pos_) + ": " +
                             what);
  }

  void skip_space() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }

  char peek() {
    skip_space();
    if (pos_ >= s_.size()) fail("unexpected end");
    return s_[pos_];
  }

  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }

  bool literal(const char* word) {
    const std::string w(word);
    if (s_.compare(pos_, w.size(), w) != 0) return false;
    pos_ += w.size();
    return true;
  }

  Value value(int depth) {
    if (depth > 64) fail("nested too deeply");
    const char c = peek();
    if (c == '{') return object(depth);
    if (c == '[') return array(depth);
    if (c == '"') return Value::of(string());
    if (literal("true")) return Value::of(true);
    if (literal("false")) return Value::of(false);
    if (literal("null")) return Value::null();
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    fail(std::string("unexpected character '") + c + "'");
  }

  Value object(int depth) {
    expect('{');
    Value v = Value::object();
    if (peek() == '}') {
      ++pos_;
      return v;
    }
    for (;;) {
      if (peek() != '"') fail("expected a member name");
      std::string key = string();
      expect(':');
      v.members.emplace_back(std::move(key), value(depth + 1));
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect('}');
      return v;
    }
  }

  Value array(int depth) {
    expect('[');
    Value v = Value::array();
    if (peek() == ']') {
      ++pos_;
      return v;
    }
    for (;;) {
      v.items.push_back(value(depth + 1));
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect(']');
      return v;
    }
  }

  Value number() {
    const std::size_t start = pos_;
    if (s_[pos_] == '-') ++pos_;
    bool integral = true;
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (c >= '0' && c <= '9') {
        ++pos_;
      } else if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
        integral = false;
        ++pos_;
      } else {
        break;
      }
    }
    const std::string text = s_.substr(start, pos_ - start);
    char* end = nullptr;
    if (integral) {
      errno = 0;
      const long long i = std::strtoll(text.c_str(), &end, 10);
      if (errno == 0 && end && *end == '\0') return Value::of(static_cast<std::int64_t>(i));
    }
    const double d = std::strtod(text.c_str(), &end);
    if (!end || *end != '\0' || text == "-") fail("malformed number '" + text + "'");
    return Value::of(d);
  }

  void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
  }

  unsigned hex4() {
    if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_++];
      code <<= 4;
      if (c >= '0' && c <= '9')
        code |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f')
        code |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        code |= static_cast<unsigned>(c - 'A' + 10);
      else
        fail("malformed \\u escape");
    }
    return code;
  }

  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          unsigned code = hex4();
          if (code >= 0xD800 && code < 0xDC00 && s_.compare(pos_, 2, "\\u") == 0) {
            pos_ += 2;
            const unsigned low = hex4();
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, code);
          break;
        }
        default:
          fail(std::string("unknown escape '\\") + e + "'");
      }
    }
  }

  const std::string& s_;
  const std::string& origin_;
  std::size_t pos_ = 0;
};

std::string real_text(double d) {
  if (!std::isfinite(d)) return "null";  // JSON has no NaN or infinity
  char buf[32];
  for (int digits = 1; digits <= 17; ++digits) {  // the shortest text that reads back exactly
    std::snprintf(buf, sizeof buf, "%.*g", digits, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  std::string s = buf;
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // stays a float when read back
  return s;
}

void write(std::string& out, const Value& v, int indent, int level) {
  const auto newline = [&](int l) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<std::size_t>(indent * l), ' ');
  };
  switch (v.type) {
    case Value::Type::Null:
      out += "null";
      return;
    case Value::Type::Bool:
      out += v.boolean ? "true" : "false";
      return;
    case Value::Type::Int:
      out += std::to_string(v.integer);
      return;
    case Value::Type::Real:
      out += real_text(v.real);
      return;
    case Value::Type::String:
      out += quote(v.text);
      return;
    case Value::Type::Array: {
      // Arrays of numbers stay on one line: shapes and index lists read better so.
      bool flat = true;
      for (const auto& item : v.items)
        flat = flat && (item.type == Value::Type::Int || item.type == Value::Type::Real);
      out += '[';
      for (std::size_t i = 0; i < v.items.size(); ++i) {
        if (i) out += flat && indent >= 0 ? ", " : ",";
        if (!flat) newline(level + 1);
        write(out, v.items[i], indent, level + 1);
      }
      if (!flat && !v.items.empty()) newline(level);
      out += ']';
      return;
    }
    case Value::Type::Object: {
      out += '{';
      for (std::size_t i = 0; i < v.members.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        out += quote(v.members[i].first) + (indent >= 0 ? ": " : ":");
        write(out, v.members[i].second, indent, level + 1);
      }
      if (!v.members.empty()) newline(level);
      out += '}';
      return;
    }
  }
}

}  // namespace

Value parse(const std::string& text, const std::string& origin) {
  return Parser(text, origin).document();
}

std::string dump(const Value& value, int indent) {
  std::string out;
  write(out, value, indent, 0);
  return out;
}

// A TOML basic string is a JSON string too: the same escapes (\" \\ \n \r \t \uXXXX); it
// also escapes DEL, which JSON may but need not.
std::string quote(const std::string& text) {
  return toml_string(text);
}

}  // namespace wb::json
