#include "workbench/params.h"

#include <cmath>
#include <cstdio>
#include <sstream>
#include <stdexcept>

namespace wb {

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::Gate:
      return "gate";
    case Kind::Loss:
      return "loss";
    case Kind::Backbone:
      return "backbone";
    case Kind::Evaluator:
      return "evaluator";
    case Kind::Matcher:
      return "matcher";
  }
  return "?";
}

std::optional<Kind> parse_kind(const std::string& text) {
  for (Kind k : {Kind::Gate, Kind::Loss, Kind::Backbone, Kind::Evaluator, Kind::Matcher})
    if (text == kind_name(k)) return k;
  return std::nullopt;
}

const char* type_name(ParamType type) {
  switch (type) {
    case ParamType::Bool:
      return "bool";
    case ParamType::Int:
      return "integer";
    case ParamType::Float:
      return "float";
    case ParamType::String:
      return "string";
    case ParamType::IntList:
      return "list of integers";
    case ParamType::FloatList:
      return "list of floats";
    case ParamType::StringList:
      return "list of strings";
    case ParamType::Plugin:
      return "plugin";
  }
  return "?";
}

namespace {

std::string format_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::ostringstream os;
  os.precision(15);
  os << v;
  std::string s = os.str();
  // Keep floats recognisable as floats in TOML.
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

template <class T, class F>
std::string format_list(const std::vector<T>& xs, F f) {
  std::string out = "[";
  for (std::size_t i = 0; i < xs.size(); ++i) out += (i ? ", " : "") + f(xs[i]);
  return out + "]";
}

[[noreturn]] void missing(const std::string& owner, const std::string& name, const char* what) {
  throw std::logic_error(owner + ": parameter '" + name + "' " + what);
}

template <class T>
const T& get(const std::map<std::string, Value>& values, const std::string& owner,
             const std::string& name) {
  auto it = values.find(name);
  if (it == values.end()) missing(owner, name, "is not set");
  if (auto* v = std::get_if<T>(&it->second)) return *v;
  missing(owner, name, "has another type");
}

}  // namespace

std::string toml_string(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char escaped[8];
          std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned char>(c));
          out += escaped;
        } else {
          out += c;  // UTF-8 bytes pass through
        }
    }
  }
  return out + "\"";
}

std::string format_value(const Value& value) {
  struct Visitor {
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(std::int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const { return format_double(d); }
    std::string operator()(const std::string& s) const { return toml_string(s); }
    std::string operator()(const std::vector<std::int64_t>& v) const {
      return format_list(v, [](std::int64_t i) { return std::to_string(i); });
    }
    std::string operator()(const std::vector<double>& v) const {
      return format_list(v, format_double);
    }
    std::string operator()(const std::vector<std::string>& v) const {
      return format_list(v, toml_string);
    }
    std::string operator()(const std::shared_ptr<const PluginRef>& p) const {
      if (!p) return "{}";
      std::string out = "{ plugin = " + toml_string(p->name);
      for (const auto& [k, v] : p->params.values()) out += ", " + k + " = " + format_value(v);
      return out + " }";
    }
  };
  return std::visit(Visitor{}, value);
}

const Value& Params::at(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) missing(owner_, name, "is not set");
  return it->second;
}

bool Params::boolean(const std::string& name) const {
  return get<bool>(values_, owner_, name);
}

std::int64_t Params::integer(const std::string& name) const {
  return get<std::int64_t>(values_, owner_, name);
}

double Params::real(const std::string& name) const {
  const Value& v = at(name);
  if (auto* i = std::get_if<std::int64_t>(&v)) return static_cast<double>(*i);
  return get<double>(values_, owner_, name);
}

const std::string& Params::text(const std::string& name) const {
  return get<std::string>(values_, owner_, name);
}

const std::vector<std::int64_t>& Params::integers(const std::string& name) const {
  return get<std::vector<std::int64_t>>(values_, owner_, name);
}

std::vector<double> Params::reals(const std::string& name) const {
  const Value& v = at(name);
  if (auto* i = std::get_if<std::vector<std::int64_t>>(&v))
    return std::vector<double>(i->begin(), i->end());
  return get<std::vector<double>>(values_, owner_, name);
}

const std::vector<std::string>& Params::texts(const std::string& name) const {
  return get<std::vector<std::string>>(values_, owner_, name);
}

const PluginRef& Params::plugin(const std::string& name) const {
  const auto& p = get<std::shared_ptr<const PluginRef>>(values_, owner_, name);
  if (!p) missing(owner_, name, "is empty");
  return *p;
}

std::optional<double> Params::maybe_real(const std::string& name) const {
  if (!has(name)) return std::nullopt;
  return real(name);
}

std::optional<std::int64_t> Params::maybe_integer(const std::string& name) const {
  if (!has(name)) return std::nullopt;
  return integer(name);
}

namespace {
ParamSpec make(std::string name, ParamType type, std::optional<Value> def, std::string doc) {
  ParamSpec s;
  s.name = std::move(name);
  s.type = type;
  s.default_value = std::move(def);
  s.doc = std::move(doc);
  return s;
}
}  // namespace

ParamSpec ParamSpec::boolean(std::string name, bool def, std::string doc) {
  return make(std::move(name), ParamType::Bool, Value{def}, std::move(doc));
}
ParamSpec ParamSpec::integer(std::string name, std::int64_t def, std::string doc) {
  return make(std::move(name), ParamType::Int, Value{def}, std::move(doc));
}
ParamSpec ParamSpec::real(std::string name, double def, std::string doc) {
  return make(std::move(name), ParamType::Float, Value{def}, std::move(doc));
}
ParamSpec ParamSpec::text(std::string name, std::string def, std::string doc) {
  return make(std::move(name), ParamType::String, Value{std::move(def)}, std::move(doc));
}
ParamSpec ParamSpec::integers(std::string name, std::vector<std::int64_t> def, std::string doc) {
  return make(std::move(name), ParamType::IntList, Value{std::move(def)}, std::move(doc));
}
ParamSpec ParamSpec::reals(std::string name, std::vector<double> def, std::string doc) {
  return make(std::move(name), ParamType::FloatList, Value{std::move(def)}, std::move(doc));
}
ParamSpec ParamSpec::texts(std::string name, std::vector<std::string> def, std::string doc) {
  return make(std::move(name), ParamType::StringList, Value{std::move(def)}, std::move(doc));
}
ParamSpec ParamSpec::plugin(std::string name, Kind kind, std::string def, std::string doc) {
  auto ref = std::make_shared<PluginRef>();
  ref->kind = kind;
  ref->name = std::move(def);
  ParamSpec s = make(std::move(name), ParamType::Plugin,
                     Value{std::shared_ptr<const PluginRef>(std::move(ref))}, std::move(doc));
  s.plugin_kind = kind;
  return s;
}
ParamSpec ParamSpec::optional(std::string name, ParamType type, std::string doc) {
  return make(std::move(name), type, std::nullopt, std::move(doc));
}

ParamSpec ParamSpec::moved(std::string name, std::string to, std::string doc) {
  ParamSpec s = make(std::move(name), ParamType::Float, std::nullopt, std::move(doc));
  s.moved_to = std::move(to);
  return s;
}

ParamSpec ParamSpec::range(double low, double high) const {
  ParamSpec s = *this;
  s.lo = low;
  s.hi = high;
  return s;
}
ParamSpec ParamSpec::at_least(double low) const {
  ParamSpec s = *this;
  s.lo = low;
  return s;
}
ParamSpec ParamSpec::above(double low) const {
  ParamSpec s = *this;
  s.lo = low;
  s.lo_open = true;
  return s;
}
ParamSpec ParamSpec::one_of(std::vector<std::string> allowed) const {
  ParamSpec s = *this;
  s.choices = std::move(allowed);
  return s;
}

std::string ParamSpec::describe() const {
  if (!moved_to.empty()) return "moved to " + moved_to;
  std::string out = type_name(type);
  if (type == ParamType::Plugin) out = std::string(kind_name(plugin_kind)) + " plugin";
  if (lo || hi) {
    const bool integral = type == ParamType::Int || type == ParamType::IntList;
    auto num = [integral](double v) {
      return integral ? std::to_string(static_cast<std::int64_t>(v)) : format_double(v);
    };
    if (lo && hi)
      out += std::string(" in ") + (lo_open ? "(" : "[") + num(*lo) + ", " + num(*hi) +
             (hi_open ? ")" : "]");
    else if (lo)
      out += std::string(lo_open ? " > " : " >= ") + num(*lo);
    else
      out += std::string(hi_open ? " < " : " <= ") + num(*hi);
  }
  if (!choices.empty()) {
    out += ", one of ";
    for (std::size_t i = 0; i < choices.size(); ++i) out += (i ? ", " : "") + choices[i];
  }
  return out;
}

}  // namespace wb
