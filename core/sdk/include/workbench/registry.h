// The catalogue of everything plugins provide. Plugins add entries while they are loaded; the
// host creates objects through it, and every object keeps its plugin library loaded.
#pragma once

#include <any>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "workbench/params.h"
#include "workbench/validation.h"

namespace wb {

class Gate;
class Loss;
class Backbone;
class Evaluator;
class Matcher;
struct GateShape;
struct BackboneContext;
struct LossContext;

using GateFactory = std::function<std::shared_ptr<Gate>(const Params&, const GateShape&)>;
using LossFactory = std::function<std::shared_ptr<Loss>(const Params&, const LossContext&)>;
using BackboneFactory =
    std::function<std::shared_ptr<Backbone>(const Params&, const BackboneContext&)>;
using EvaluatorFactory = std::function<std::shared_ptr<Evaluator>(const Params&)>;
using MatcherFactory = std::function<std::shared_ptr<Matcher>(const Params&)>;

struct Entry {
  // Declared first so it is destroyed last: the factory's code lives in the library.
  std::shared_ptr<void> library;
  Kind kind = Kind::Gate;
  std::string name;
  std::string doc;
  std::vector<ParamSpec> params;
  std::string origin;  // file the entry came from
  std::any factory;    // one of the *Factory types above, matching kind
  Validator check;     // add_check(): the checks made before anything runs; empty: none

  const ParamSpec* param(const std::string& name) const;
};

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Called by plugins from their registration function.
  void add_gate(std::string name, std::string doc, std::vector<ParamSpec> params, GateFactory f);
  void add_loss(std::string name, std::string doc, std::vector<ParamSpec> params, LossFactory f);
  void add_backbone(std::string name, std::string doc, std::vector<ParamSpec> params,
                    BackboneFactory f);
  void add_evaluator(std::string name, std::string doc, std::vector<ParamSpec> params,
                     EvaluatorFactory f);
  void add_matcher(std::string name, std::string doc, std::vector<ParamSpec> params,
                   MatcherFactory f);

  // Attaches the checks of an entry this library added before (workbench/validation.h): run on
  // its resolved parameters for every point before any point runs. Optional.
  void add_check(Kind kind, const std::string& name, Validator check);

  const Entry* find(Kind kind, const std::string& name) const;
  std::vector<const Entry*> entries(Kind kind) const;
  std::vector<const Entry*> all() const;
  std::vector<std::string> names(Kind kind) const;

  // Create objects. Params must already be validated (config validation does that); the
  // returned pointer shares ownership of the plugin library. Throw if the name is unknown.
  std::shared_ptr<Gate> make_gate(const std::string& name, const Params& p,
                                  const GateShape& shape) const;
  std::shared_ptr<Loss> make_loss(const std::string& name, const Params& p,
                                  const LossContext& context) const;
  std::shared_ptr<Backbone> make_backbone(const std::string& name, const Params& p,
                                          const BackboneContext& context) const;
  std::shared_ptr<Evaluator> make_evaluator(const std::string& name, const Params& p) const;
  std::shared_ptr<Matcher> make_matcher(const std::string& name, const Params& p) const;

  // Runs the entry's checks (none registered: an empty report).
  ValidationReport check(Kind kind, const std::string& name, const Params& p,
                         const ValidationContext& context) const;

  // Parameters with every default filled in, for code that builds objects without a config.
  Params defaults(Kind kind, const std::string& name) const;

  // Used by the loader: entries added from now on come from this library.
  void begin_library(std::shared_ptr<void> library, std::string origin);
  void end_library();
  void abort_library();  // registration failed: drop what this library added

 private:
  void add(Kind kind, std::string name, std::string doc, std::vector<ParamSpec> params,
           std::any factory);
  const Entry& require(Kind kind, const std::string& name) const;

  std::vector<std::unique_ptr<Entry>> entries_;
  std::shared_ptr<void> current_library_;
  std::string current_origin_;
  std::size_t library_first_entry_ = 0;
};

}  // namespace wb
