// `workbench bench NAME [options]`: dispatches to the benchmark named by the first argument.
#include <iostream>
#include <stdexcept>

#include "cli/bench.h"

namespace wb::cli {

namespace {

struct Benchmark {
  const char* name;
  const char* summary;
  int (*fn)(const Args&);
};

const Benchmark kBenchmarks[] = {
    {"loader", "two MoCo views per image per second: Fashion-MNIST and 224-px JPEG folders",
     bench_loader},
    {"moe", "one MoE layer (16 experts, top-2) vs the FLOP-matched dense MLP, forward + backward",
     bench_moe},
    {"step", "images/s of one training step (trainer's train_step) on a pre-made batch",
     bench_step},
};

void usage(std::ostream& os) {
  os << "usage: workbench bench <name> [options]   (workbench bench <name> --help)\n\n"
        "benchmarks:\n";
  for (const auto& b : kBenchmarks) os << "  " << b.name << "  " << b.summary << "\n";
}

}  // namespace

int bench(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    usage(args.empty() ? std::cerr : std::cout);
    return args.empty() ? 2 : 0;
  }
  for (const auto& b : kBenchmarks)
    if (args[0] == b.name) return b.fn(Args(args.begin() + 1, args.end()));
  std::cerr << "error: unknown benchmark '" << args[0] << "'\n\n";
  usage(std::cerr);
  return 2;
}

}  // namespace wb::cli
