// Typed plugin parameters: the schema a plugin declares and the validated values it receives.
// Deliberately free of TOML and LibTorch so that the SDK stays light and the ABI small.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace wb {

enum class Kind { Gate, Loss, Backbone, Evaluator, Matcher };
const char* kind_name(Kind kind);
std::optional<Kind> parse_kind(const std::string& text);

enum class ParamType { Bool, Int, Float, String, IntList, FloatList, StringList, Plugin };
const char* type_name(ParamType type);

struct PluginRef;

// One parameter value. A Plugin-typed parameter holds a nested plugin choice with its own
// validated parameters (e.g. OGAR's matcher = { plugin = "overlap", lambda = 0.2 }).
using Value =
    std::variant<bool, std::int64_t, double, std::string, std::vector<std::int64_t>,
                 std::vector<double>, std::vector<std::string>, std::shared_ptr<const PluginRef>>;

// Renders a value as a TOML literal ("0.3", "[1, 2]", "{ plugin = \"fsm\" }").
std::string format_value(const Value& value);
// A TOML basic string: "text" in double quotes, with quotes, backslashes and control characters
// escaped. The workbench's one quoter: config.toml, status.toml and point.toml use it too.
std::string toml_string(const std::string& text);

class Params {
 public:
  Params() = default;
  explicit Params(std::string owner) : owner_(std::move(owner)) {}

  bool has(const std::string& name) const { return values_.count(name) != 0; }
  bool boolean(const std::string& name) const;
  std::int64_t integer(const std::string& name) const;
  double real(const std::string& name) const;  // accepts Int values too
  const std::string& text(const std::string& name) const;
  const std::vector<std::int64_t>& integers(const std::string& name) const;
  std::vector<double> reals(const std::string& name) const;  // accepts Int lists too
  const std::vector<std::string>& texts(const std::string& name) const;
  const PluginRef& plugin(const std::string& name) const;

  // Optional parameters (declared without a default) are absent unless the user set them.
  std::optional<double> maybe_real(const std::string& name) const;
  std::optional<std::int64_t> maybe_integer(const std::string& name) const;

  const Value& at(const std::string& name) const;
  void set(const std::string& name, Value value) { values_[name] = std::move(value); }
  const std::map<std::string, Value>& values() const { return values_; }
  const std::string& owner() const { return owner_; }

 private:
  std::string owner_;  // "loss ogar": named in the error when a plugin asks for a missing key
  std::map<std::string, Value> values_;
};

struct PluginRef {
  Kind kind = Kind::Matcher;
  std::string name;
  Params params;
};

// Declares one parameter. Built with the named constructors and refined with the chained
// setters, e.g. ParamSpec::real("alpha", 0.3, "weight of the patch term").range(0, 1).
struct ParamSpec {
  std::string name;
  ParamType type = ParamType::Float;
  std::optional<Value> default_value;  // nullopt: optional parameter, absent unless set
  std::string doc;
  std::optional<double> lo, hi;           // inclusive bounds for numbers and number lists
  bool lo_open = false, hi_open = false;  // strict bounds (e.g. noise_std > 0)
  std::vector<std::string> choices;       // allowed strings (String and StringList)
  Kind plugin_kind = Kind::Matcher;       // for Plugin-typed parameters
  std::string moved_to;                   // set by moved(): where the key lives now

  static ParamSpec boolean(std::string name, bool def, std::string doc);
  static ParamSpec integer(std::string name, std::int64_t def, std::string doc);
  static ParamSpec real(std::string name, double def, std::string doc);
  static ParamSpec text(std::string name, std::string def, std::string doc);
  static ParamSpec integers(std::string name, std::vector<std::int64_t> def, std::string doc);
  static ParamSpec reals(std::string name, std::vector<double> def, std::string doc);
  static ParamSpec texts(std::string name, std::vector<std::string> def, std::string doc);
  // A nested plugin of `kind`, given in TOML as a name or as { plugin = "...", ... }.
  static ParamSpec plugin(std::string name, Kind kind, std::string def, std::string doc);
  static ParamSpec optional(std::string name, ParamType type, std::string doc);
  // A key this plugin no longer takes because it moved to another table (e.g. moco's tau, now
  // train.temperature): experiment files that set it are refused with a message naming `to`,
  // and older run directories' config.toml are migrated (docs/plugins.md).
  static ParamSpec moved(std::string name, std::string to, std::string doc);

  // Refinements return a modified copy so that they chain on temporaries.
  ParamSpec range(double low, double high) const;
  ParamSpec at_least(double low) const;
  ParamSpec above(double low) const;  // strict lower bound, e.g. noise_std > 0
  ParamSpec one_of(std::vector<std::string> allowed) const;

  // Describes the accepted values, e.g. "float in [0, 1]", "one of sparse, dense" or
  // "moved to train.temperature".
  std::string describe() const;
};

}  // namespace wb
