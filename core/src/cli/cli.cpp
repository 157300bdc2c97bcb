#include "cli/cli.h"

#include <cstdio>
#include <exception>
#include <functional>
#include <iostream>

#include "workbench/version.h"

namespace wb::cli {

namespace {

struct Verb {
  const char* name;
  const char* summary;
  std::function<int(const Args&)> fn;
  bool hidden = false;
};

const std::vector<Verb>& verbs() {
  static const std::vector<Verb> table = {
      {"run", "run every point of an experiment file (FILE.toml)", verb_run},
      {"plugins", "list plugins, their parameters and defaults, and libraries that failed",
       verb_plugins},
      {"eval", "run evaluators on a finished run from its checkpoint", verb_eval},
      {"cluster", "cluster a run's training set with its features (MoCE): RUN_DIR/clusters.h5",
       verb_cluster},
      {"deploy", "one expert path of a MoCE run as a dense run directory (--data NAME)",
       verb_deploy},
      {"export", "write a run's backbone for PyTorch / timm (.pt, .safetensors, .json)",
       verb_export},
      {"report", "write the comparison report of one or more experiments", verb_report},
      {"bench", "run a benchmark (moe, step, loader, ...) with workbench-bench", verb_bench},
      {"views", "draw a batch of view pairs with crop boxes and matched patches (PNG)", verb_views},
      {"_point", "internal: run one point in this process", verb_point, true},
      {"_stage", "internal: run one cluster or deploy point of a stage", verb_stage, true},
      {"_probe", "internal: load one plugin library and report what it holds", verb_probe, true},
  };
  return table;
}

void usage(std::ostream& os) {
  os << "workbench " << WORKBENCH_VERSION
     << " - experiments with mixture-of-experts self-supervised vision models\n\n"
        "usage: workbench <verb> [options]   (workbench <verb> --help for details)\n\nverbs:\n";
  for (const auto& v : verbs())
    if (!v.hidden)
      os << "  " << v.name << std::string(10 - std::string(v.name).size(), ' ') << v.summary
         << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(std::cerr);
    return 2;
  }
  const std::string verb = argv[1];
  if (verb == "--help" || verb == "-h" || verb == "help") {
    usage(std::cout);
    return 0;
  }
  if (verb == "--version") {
    std::cout << WORKBENCH_VERSION << "\n";
    return 0;
  }
  Args args(argv + 2, argv + argc);
  for (const auto& v : verbs()) {
    if (verb != v.name) continue;
    try {
      return v.fn(args);
    } catch (const std::exception& e) {
      std::cerr << "error: " << e.what() << "\n";
      return 1;
    }
  }
  std::cerr << "error: unknown verb '" << verb << "'\n\n";
  usage(std::cerr);
  return 2;
}

}  // namespace wb::cli
