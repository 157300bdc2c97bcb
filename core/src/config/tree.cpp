#include "config/tree.h"

#include <toml++/toml.h>
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "workbench/params.h"  // toml_string

namespace wb::config {

void fail(const Pos& pos, const std::string& message) {
  throw ConfigError(pos.file, pos.line, pos.column, message);
}

Node Node::table(Pos pos) {
  Node n;
  n.type = Type::Table;
  n.pos = std::move(pos);
  return n;
}

Node Node::string(std::string s, Pos pos) {
  Node n;
  n.type = Type::String;
  n.text = std::move(s);
  n.pos = std::move(pos);
  return n;
}

Node Node::int64(std::int64_t i, Pos pos) {
  Node n;
  n.type = Type::Int;
  n.integer = i;
  n.pos = std::move(pos);
  return n;
}

const Member* Node::member(const std::string& key) const {
  for (const auto& m : members)
    if (m.key == key) return &m;
  return nullptr;
}

const Node* Node::find(const std::string& key) const {
  const Member* m = member(key);
  return m ? &m->value : nullptr;
}

Node* Node::find(const std::string& key) {
  return const_cast<Node*>(static_cast<const Node*>(this)->find(key));
}

void Node::set(const std::string& key, Node value, const Pos& key_pos) {
  for (auto& m : members)
    if (m.key == key) {
      m.value = std::move(value);
      return;
    }
  members.push_back(Member{key, key_pos, std::move(value)});
}

const char* node_type_name(const Node& node) {
  switch (node.type) {
    case Node::Type::Bool:
      return "bool";
    case Node::Type::Int:
      return "integer";
    case Node::Type::Float:
      return "float";
    case Node::Type::String:
      return "string";
    case Node::Type::Array:
      return "list";
    case Node::Type::Table:
      return "table";
    case Node::Type::Other:
      return node.text.c_str();
  }
  return "?";
}

namespace {

Pos pos_of(const toml::source_region& region, const Pos& fallback, bool no_lines) {
  if (no_lines || !region.begin) return fallback;
  Pos p;
  p.file = region.path ? *region.path : fallback.file;
  p.line = static_cast<int>(region.begin.line);
  p.column = static_cast<int>(region.begin.column);
  return p;
}

Node convert(const toml::node& in, const Pos& fallback, bool no_lines) {
  Node out;
  out.pos = pos_of(in.source(), fallback, no_lines);
  switch (in.type()) {
    case toml::node_type::boolean:
      out.type = Node::Type::Bool;
      out.boolean = in.as_boolean()->get();
      break;
    case toml::node_type::integer:
      out.type = Node::Type::Int;
      out.integer = in.as_integer()->get();
      break;
    case toml::node_type::floating_point:
      out.type = Node::Type::Float;
      out.real = in.as_floating_point()->get();
      break;
    case toml::node_type::string:
      out.type = Node::Type::String;
      out.text = in.as_string()->get();
      break;
    case toml::node_type::array:
      out.type = Node::Type::Array;
      for (const auto& item : *in.as_array()) out.items.push_back(convert(item, out.pos, no_lines));
      break;
    case toml::node_type::table: {
      const toml::table& t = *in.as_table();
      out.type = Node::Type::Table;
      out.inline_table = t.is_inline();
      for (const auto& [key, value] : t) {
        Pos key_pos = pos_of(key.source(), pos_of(value.source(), out.pos, no_lines), no_lines);
        out.members.push_back(
            Member{std::string(key.str()), key_pos, convert(value, key_pos, no_lines)});
      }
      // TOML++ keeps keys sorted; file order matters (grid axes, messages), so restore it.
      std::stable_sort(out.members.begin(), out.members.end(),
                       [](const Member& a, const Member& b) {
                         return std::make_pair(a.key_pos.line, a.key_pos.column) <
                                std::make_pair(b.key_pos.line, b.key_pos.column);
                       });
      break;
    }
    case toml::node_type::date:
      out.type = Node::Type::Other;
      out.text = "date";
      break;
    case toml::node_type::time:
      out.type = Node::Type::Other;
      out.text = "time";
      break;
    default:
      out.type = Node::Type::Other;
      out.text = "date-time";
      break;
  }
  return out;
}

}  // namespace

Node parse_toml(const std::string& text, const std::string& origin, bool no_lines) {
  toml::table doc;
  try {
    doc = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    throw ConfigError(origin, no_lines ? 0 : static_cast<int>(b.line),
                      no_lines ? 0 : static_cast<int>(b.column),
                      "TOML syntax error: " + std::string(e.description()));
  }
  Pos root{origin, no_lines ? 0 : 1, no_lines ? 0 : 1};
  return convert(doc, root, no_lines);
}

Node parse_value(const std::string& text, const std::string& origin) {
  Pos pos{origin, 0, 0};
  try {
    toml::table t = toml::parse("v = " + text, origin);
    if (t.size() == 1 && t.contains("v")) return convert(*t.get("v"), pos, true);
  } catch (const toml::parse_error& e) {
    // Not a TOML value: a bare word is taken as a string below, but text that opens a table,
    // an array or a quoted string was meant as one and is refused.
    const std::size_t start = text.find_first_not_of(" \t");
    const char open = start == std::string::npos ? ' ' : text[start];
    const char* what = open == '{'                   ? "inline table"
                       : open == '['                 ? "array"
                       : open == '"' || open == '\'' ? "quoted string"
                                                     : nullptr;
    if (what)
      fail(pos,
           std::string("malformed ") + what + " '" + text + "': " + std::string(e.description()));
  }
  return Node::string(text, pos);
}

std::string format_real(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string s = buf;
  // A float must stay a float when read back ("2" would be an integer).
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string format_key(const std::string& key) {
  bool bare = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
  return bare ? key : toml_string(key);
}

std::string literal(const Node& node) {
  switch (node.type) {
    case Node::Type::Bool:
      return node.boolean ? "true" : "false";
    case Node::Type::Int:
      return std::to_string(node.integer);
    case Node::Type::Float:
      return format_real(node.real);
    case Node::Type::String:
      return toml_string(node.text);
    case Node::Type::Array: {
      std::string out = "[";
      for (std::size_t i = 0; i < node.items.size(); ++i)
        out += (i ? ", " : "") + literal(node.items[i]);
      return out + "]";
    }
    case Node::Type::Table: {
      if (node.members.empty()) return "{}";
      std::string out = "{ ";
      for (std::size_t i = 0; i < node.members.size(); ++i)
        out += (i ? ", " : "") + format_key(node.members[i].key) + " = " +
               literal(node.members[i].value);
      return out + " }";
    }
    case Node::Type::Other:
      return "<" + node.text + ">";
  }
  return "?";
}

bool same_value(const Node& a, const Node& b) {
  using T = Node::Type;
  if (a.type == T::Int && b.type == T::Int) return a.integer == b.integer;
  if (a.is_number() && b.is_number()) {
    double x = a.type == T::Int ? static_cast<double>(a.integer) : a.real;
    double y = b.type == T::Int ? static_cast<double>(b.integer) : b.real;
    return x == y;
  }
  if (a.is_string() && b.is_table()) {
    const Node* p = b.find("plugin");
    return p && p->is_string() && p->text == a.text;
  }
  if (a.is_table() && b.is_string()) return same_value(b, a);
  if (a.type != b.type) return false;
  switch (a.type) {
    case T::Bool:
      return a.boolean == b.boolean;
    case T::String:
      return a.text == b.text;
    case T::Array:
      if (a.items.size() != b.items.size()) return false;
      for (std::size_t i = 0; i < a.items.size(); ++i)
        if (!same_value(a.items[i], b.items[i])) return false;
      return true;
    case T::Table:
      if (a.members.size() != b.members.size()) return false;
      for (const auto& m : a.members) {
        const Node* other = b.find(m.key);
        if (!other || !same_value(m.value, *other)) return false;
      }
      return true;
    default:
      return false;
  }
}

std::string plugin_of(const Node& element) {
  if (element.is_string()) return element.text;
  if (element.is_table())
    if (const Node* p = element.find("plugin"); p && p->is_string()) return p->text;
  return "";
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = path.find('.', start);
    out.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return out;
}

namespace {

bool is_index(const std::string& s) {
  return !s.empty() && s.size() < 10 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The element of a list of plugins that `segment` names: an index or a unique plugin name.
// Returns -1 when it names none (and `strict` is false).
long element_index(const Node& list, const std::vector<std::string>& segments, std::size_t at,
                   const std::string& path, const std::string& walked, const Pos& where,
                   bool strict) {
  const std::string& seg = segments[at];
  if (is_index(seg)) {
    std::size_t i = std::stoul(seg);
    if (i < list.items.size()) return static_cast<long>(i);
    if (!strict) return -1;
    fail(where, "'" + path + "': index " + seg + " is out of range, '" + walked + "' has " +
                    std::to_string(list.items.size()) + " elements");
  }
  std::vector<std::size_t> hits;
  std::string present;
  for (std::size_t i = 0; i < list.items.size(); ++i) {
    std::string name = plugin_of(list.items[i]);
    present += (present.empty() ? "" : ", ") + (name.empty() ? "?" : name);
    if (name == seg) hits.push_back(i);
  }
  if (hits.size() == 1) return static_cast<long>(hits[0]);
  if (hits.empty()) {
    if (!strict) return -1;
    fail(where, "'" + path + "': no element of '" + walked + "' uses plugin '" + seg + "' (" +
                    (present.empty() ? "the list is empty" : "plugins there: " + present) + ")");
  }
  std::string options;
  for (std::size_t i : hits) {
    std::vector<std::string> alt = segments;
    alt[at] = std::to_string(i);
    std::string joined;
    for (const auto& s : alt) joined += (joined.empty() ? "" : ".") + s;
    options += (options.empty() ? "'" : " or '") + joined + "'";
  }
  fail(where, "'" + path + "' is ambiguous: " + std::to_string(hits.size()) + " elements of '" +
                  walked + "' use plugin '" + seg + "'; use the index form, " + options);
}

std::vector<std::string> checked_split(const std::string& path, const Pos& where) {
  std::vector<std::string> segments = split_path(path);
  for (const auto& s : segments)
    if (s.empty()) fail(where, "invalid key '" + path + "'");
  return segments;
}

}  // namespace

void assign(Node& root, const std::string& path, Node value, const Pos& where) {
  std::vector<std::string> segments = checked_split(path, where);
  Node* cur = &root;
  std::string walked;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const std::string& seg = segments[i];
    bool last = i + 1 == segments.size();
    Node* next = nullptr;
    if (cur->is_table()) {
      if (last) return cur->set(seg, std::move(value), where);
      next = cur->find(seg);
      if (!next) {
        cur->set(seg, Node::table(where), where);
        next = cur->find(seg);
      }
    } else {
      long idx = element_index(*cur, segments, i, path, walked, where, true);
      if (last) {
        cur->items[idx] = std::move(value);
        return;
      }
      next = &cur->items[idx];
    }
    walked += (walked.empty() ? "" : ".") + seg;
    if (next->is_string()) {
      // A plugin given by name: descending into it needs its table form.
      Node expanded = Node::table(next->pos);
      expanded.set("plugin", *next, next->pos);
      *next = std::move(expanded);
    }
    if (!next->is_table() && !next->is_array())
      fail(where, "cannot set '" + path + "': '" + walked + "' is a " + node_type_name(*next) +
                      ", not a table");
    cur = next;
  }
}

const Node* lookup(const Node& root, const std::string& path, const Pos& where) {
  std::vector<std::string> segments = checked_split(path, where);
  const Node* cur = &root;
  std::string walked;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const std::string& seg = segments[i];
    if (cur->is_table()) {
      cur = cur->find(seg);
    } else if (cur->is_array()) {
      long idx = element_index(*cur, segments, i, path, walked, where, false);
      cur = idx < 0 ? nullptr : &cur->items[idx];
    } else if (cur->is_string() && seg == "plugin" && i + 1 == segments.size()) {
      return cur;  // the name of a plugin given by name
    } else {
      return nullptr;
    }
    if (!cur) return nullptr;
    walked += (walked.empty() ? "" : ".") + seg;
  }
  return cur;
}

namespace {
// `prefix_pos` is where the dotted key so far starts: a dotted key on one line
// ("train.batch = 1") is reported at its first part, not at its last.
void flatten_into(const Node& table, const std::string& prefix, const Pos& prefix_pos,
                  std::vector<Assignment>& out) {
  for (const auto& m : table.members) {
    std::string key = prefix.empty() ? m.key : prefix + "." + m.key;
    bool same_line =
        !prefix.empty() && prefix_pos.line == m.key_pos.line && prefix_pos.file == m.key_pos.file;
    const Pos& pos = same_line ? prefix_pos : m.key_pos;
    if (m.value.is_table() && !m.value.inline_table)
      flatten_into(m.value, key, pos, out);
    else
      out.push_back(Assignment{key, pos, m.value});
  }
}
}  // namespace

std::vector<Assignment> flatten(const Node& table) {
  std::vector<Assignment> out;
  flatten_into(table, "", Pos{}, out);
  return out;
}

}  // namespace wb::config
