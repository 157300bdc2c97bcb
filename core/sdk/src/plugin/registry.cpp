#include "workbench/registry.h"

#include <algorithm>
#include <stdexcept>

namespace wb {

namespace {

// The returned object shares ownership of the library its code lives in. Holder members are
// destroyed in reverse order: the object first, then (possibly) the library.
template <class T>
std::shared_ptr<T> keep_library(std::shared_ptr<T> object, const std::shared_ptr<void>& library) {
  if (!object || !library) return object;
  struct Holder {
    std::shared_ptr<void> library;
    std::shared_ptr<T> object;
  };
  auto holder = std::make_shared<Holder>(Holder{library, std::move(object)});
  T* raw = holder->object.get();
  return std::shared_ptr<T>(std::move(holder), raw);
}

template <class Factory>
const Factory& factory_of(const Entry& e) {
  const auto* f = std::any_cast<Factory>(&e.factory);
  if (!f)
    throw std::logic_error(std::string(kind_name(e.kind)) + " '" + e.name +
                           "' was registered with a factory of the wrong type");
  return *f;
}

template <class T>
std::shared_ptr<T> checked(std::shared_ptr<T> object, const Entry& e) {
  if (!object)
    throw std::runtime_error(std::string(kind_name(e.kind)) + " '" + e.name + "' from " + e.origin +
                             " returned no object");
  return keep_library(std::move(object), e.library);
}

}  // namespace

const ParamSpec* Entry::param(const std::string& n) const {
  for (const auto& p : params)
    if (p.name == n) return &p;
  return nullptr;
}

Registry::Registry() = default;
Registry::~Registry() = default;

void Registry::add(Kind kind, std::string name, std::string doc, std::vector<ParamSpec> params,
                   std::any factory) {
  if (const Entry* existing = find(kind, name))
    throw std::runtime_error(std::string(kind_name(kind)) + " '" + name +
                             "' is already provided by " + existing->origin);
  for (std::size_t i = 0; i < params.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (params[i].name == params[j].name)
        throw std::runtime_error(std::string(kind_name(kind)) + " '" + name +
                                 "' declares parameter '" + params[i].name + "' twice");
  auto e = std::make_unique<Entry>();
  e->library = current_library_;
  e->kind = kind;
  e->name = std::move(name);
  e->doc = std::move(doc);
  e->params = std::move(params);
  e->origin = current_origin_.empty() ? "<built in>" : current_origin_;
  e->factory = std::move(factory);
  entries_.push_back(std::move(e));
}

void Registry::add_gate(std::string n, std::string d, std::vector<ParamSpec> p, GateFactory f) {
  add(Kind::Gate, std::move(n), std::move(d), std::move(p), std::move(f));
}
void Registry::add_loss(std::string n, std::string d, std::vector<ParamSpec> p, LossFactory f) {
  add(Kind::Loss, std::move(n), std::move(d), std::move(p), std::move(f));
}
void Registry::add_backbone(std::string n, std::string d, std::vector<ParamSpec> p,
                            BackboneFactory f) {
  add(Kind::Backbone, std::move(n), std::move(d), std::move(p), std::move(f));
}
void Registry::add_evaluator(std::string n, std::string d, std::vector<ParamSpec> p,
                             EvaluatorFactory f) {
  add(Kind::Evaluator, std::move(n), std::move(d), std::move(p), std::move(f));
}
void Registry::add_matcher(std::string n, std::string d, std::vector<ParamSpec> p,
                           MatcherFactory f) {
  add(Kind::Matcher, std::move(n), std::move(d), std::move(p), std::move(f));
}

void Registry::add_check(Kind kind, const std::string& name, Validator check) {
  // Only this library's own entries: a library may not change the checks of another's.
  for (std::size_t i = library_first_entry_; i < entries_.size(); ++i) {
    Entry& e = *entries_[i];
    if (e.kind != kind || e.name != name) continue;
    e.check = std::move(check);
    return;
  }
  throw std::runtime_error(std::string("add_check: this library registered no ") + kind_name(kind) +
                           " '" + name + "' (call add_check after add_" + kind_name(kind) + ")");
}

ValidationReport Registry::check(Kind kind, const std::string& name, const Params& p,
                                 const ValidationContext& context) const {
  const Entry& e = require(kind, name);
  ValidationReport report;
  if (e.check) e.check(p, context, report);
  return report;
}

const Entry* Registry::find(Kind kind, const std::string& name) const {
  for (const auto& e : entries_)
    if (e->kind == kind && e->name == name) return e.get();
  return nullptr;
}

std::vector<const Entry*> Registry::entries(Kind kind) const {
  std::vector<const Entry*> out;
  for (const auto& e : entries_)
    if (e->kind == kind) out.push_back(e.get());
  std::sort(out.begin(), out.end(), [](auto* a, auto* b) { return a->name < b->name; });
  return out;
}

std::vector<const Entry*> Registry::all() const {
  std::vector<const Entry*> out;
  for (Kind k : {Kind::Backbone, Kind::Gate, Kind::Loss, Kind::Matcher, Kind::Evaluator})
    for (const Entry* e : entries(k)) out.push_back(e);
  return out;
}

std::vector<std::string> Registry::names(Kind kind) const {
  std::vector<std::string> out;
  for (const Entry* e : entries(kind)) out.push_back(e->name);
  return out;
}

const Entry& Registry::require(Kind kind, const std::string& name) const {
  if (const Entry* e = find(kind, name)) return *e;
  std::string known;
  for (const auto& n : names(kind)) known += (known.empty() ? "" : ", ") + n;
  throw std::runtime_error(std::string("unknown ") + kind_name(kind) + " '" + name +
                           "' (available: " + (known.empty() ? "none" : known) + ")");
}

Params Registry::defaults(Kind kind, const std::string& name) const {
  const Entry& e = require(kind, name);
  Params p(std::string(kind_name(kind)) + " " + name);
  for (const auto& spec : e.params)
    if (spec.default_value) p.set(spec.name, *spec.default_value);
  return p;
}

std::shared_ptr<Gate> Registry::make_gate(const std::string& name, const Params& p,
                                          const GateShape& shape) const {
  const Entry& e = require(Kind::Gate, name);
  return checked(factory_of<GateFactory>(e)(p, shape), e);
}
std::shared_ptr<Loss> Registry::make_loss(const std::string& name, const Params& p,
                                          const LossContext& context) const {
  const Entry& e = require(Kind::Loss, name);
  return checked(factory_of<LossFactory>(e)(p, context), e);
}
std::shared_ptr<Backbone> Registry::make_backbone(const std::string& name, const Params& p,
                                                  const BackboneContext& context) const {
  const Entry& e = require(Kind::Backbone, name);
  return checked(factory_of<BackboneFactory>(e)(p, context), e);
}
std::shared_ptr<Evaluator> Registry::make_evaluator(const std::string& name,
                                                    const Params& p) const {
  const Entry& e = require(Kind::Evaluator, name);
  return checked(factory_of<EvaluatorFactory>(e)(p), e);
}
std::shared_ptr<Matcher> Registry::make_matcher(const std::string& name, const Params& p) const {
  const Entry& e = require(Kind::Matcher, name);
  return checked(factory_of<MatcherFactory>(e)(p), e);
}

void Registry::begin_library(std::shared_ptr<void> library, std::string origin) {
  current_library_ = std::move(library);
  current_origin_ = std::move(origin);
  library_first_entry_ = entries_.size();
}

void Registry::end_library() {
  current_library_.reset();
  current_origin_.clear();
}

void Registry::abort_library() {
  entries_.resize(library_first_entry_);
  end_library();
}

}  // namespace wb
