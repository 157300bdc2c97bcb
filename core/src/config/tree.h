// A small TOML document tree that remembers where every value came from. TOML++ drops source
// positions when nodes are copied; grid expansion copies the same values into many points,
// so parsed documents are converted once into this tree, which copies positions along.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/error.h"

namespace wb::config {

// Where a node was written. line == 0: no line (a --set value, or a synthesised node).
struct Pos {
  std::string file;
  int line = 0, column = 0;
};

[[noreturn]] void fail(const Pos& pos, const std::string& message);

struct Member;

struct Node {
  enum class Type { Bool, Int, Float, String, Array, Table, Other };
  Type type = Type::Table;
  bool boolean = false;
  std::int64_t integer = 0;
  double real = 0;
  std::string text;             // String; for Other the TOML type name ("date", ...)
  std::vector<Node> items;      // Array
  std::vector<Member> members;  // Table, in file order
  bool inline_table = false;    // written as { ... }: assigning it replaces a whole table
  Pos pos;

  static Node table(Pos pos);
  static Node string(std::string s, Pos pos);
  static Node int64(std::int64_t i, Pos pos);

  bool is_table() const { return type == Type::Table; }
  bool is_array() const { return type == Type::Array; }
  bool is_string() const { return type == Type::String; }
  bool is_number() const { return type == Type::Int || type == Type::Float; }

  const Node* find(const std::string& key) const;
  Node* find(const std::string& key);
  const Member* member(const std::string& key) const;
  // Replaces the value of `key` or appends it (the key then gets `key_pos`).
  void set(const std::string& key, Node value, const Pos& key_pos);
};

struct Member {
  std::string key;
  Pos key_pos;
  Node value;
};

// "integer", "table", ... for messages.
const char* node_type_name(const Node& node);

// Parses TOML text; syntax errors become ConfigError at the parser's position. `origin` names
// the text in positions. With `no_lines`, every node gets line 0 (values given on the
// command line, where a line number would mislead).
Node parse_toml(const std::string& text, const std::string& origin, bool no_lines = false);

// Parses the value of `--set key=value`: a TOML value, or the bare text as a string when it
// is not one ("--set data.path=/data/x"). Text opening with { [ " or ' that is not valid TOML
// is a ConfigError at `origin`, not a string.
Node parse_value(const std::string& text, const std::string& origin);

// A TOML literal for messages, assignments and canonical output: numbers in a normalised
// form (floats round-trip exactly), strings quoted (wb::toml_string), tables inline with their
// keys in order.
std::string literal(const Node& node);
std::string format_real(double v);               // shortest text that reads back as exactly v
std::string format_key(const std::string& key);  // bare when possible, else quoted

// Numeric-aware equality: 1 == 1.0; a string equals a table whose `plugin` is that string.
bool same_value(const Node& a, const Node& b);

// --- dotted addressing (design.md): train.batch, losses.ogar.alpha, losses.1.weight,
// losses.ogar.matcher.lambda. A plugin given as a plain name is expanded to { plugin = name }
// when a path descends into it.

std::vector<std::string> split_path(const std::string& path);

// The plugin a list element names: the string itself or the table's `plugin`; "" if none.
std::string plugin_of(const Node& element);

// Sets `path` below `root` to `value`; problems are reported at `where`.
void assign(Node& root, const std::string& path, Node value, const Pos& where);

// The node at `path`, or nullptr when a part is missing. Ambiguous plugin names throw at `where`.
const Node* lookup(const Node& root, const std::string& path, const Pos& where);

// One key = value of a flattened table ([grid], [[point]], [profile.X]): non-inline tables are
// descended into and their keys joined with dots; anything else is a value.
struct Assignment {
  std::string key;
  Pos key_pos;
  Node value;
};
std::vector<Assignment> flatten(const Node& table);

}  // namespace wb::config
