// `workbench bench NAME [options]`: the benchmarks are a separate executable, workbench-bench
// (built from bench/), so that the production binary carries no benchmark code. This verb runs
// the one that sits beside this executable with the same arguments.
#include <filesystem>
#include <iostream>

#include "cli/cli.h"
#include "process/spawn.h"

namespace wb::cli {

int verb_bench(const Args& args) {
  namespace fs = std::filesystem;
  const fs::path exe = fs::read_symlink("/proc/self/exe");
  const fs::path bench = exe.parent_path() / "workbench-bench";
  if (!fs::exists(bench)) {
    std::cerr << "error: " << bench.string()
              << " not found: the benchmarks are built separately "
                 "(cmake --build BUILD_DIR --target workbench-bench)\n";
    return 2;
  }
  ProcessSpec spec;
  spec.argv = {bench.string()};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  return run_process(spec);
}

}  // namespace wb::cli
