// workbench-bench NAME [options] (or `workbench bench NAME [options]`, which runs this
// executable): dispatches to the benchmark named by the first argument.
#include <exception>
#include <iostream>
#include <stdexcept>

#include "bench.h"
#include "process/threads.h"  // tune_allocator

namespace wb::bench {

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
    {"ep", "expert-parallel MoE layer on 2 ranks (Gloo, loopback): the all-to-all's share",
     bench_expert_parallel},
};

void usage(std::ostream& os) {
  os << "usage: workbench-bench <name> [options]   (workbench-bench <name> --help; also run as\n"
        "       workbench bench <name> [options])\n\n"
        "benchmarks:\n";
  for (const auto& b : kBenchmarks) os << "  " << b.name << "  " << b.summary << "\n";
}

}  // namespace

int run(const Args& args) {
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

}  // namespace wb::bench

int main(int argc, char** argv) {
  wb::tune_allocator();  // as the workbench itself runs, so that steps are timed as they run
  try {
    return wb::bench::run(wb::bench::Args(argv + 1, argv + argc));
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
