// Verbs not built yet. Each moves to its own file when it is implemented.
#include <stdexcept>

#include "cli/cli.h"

namespace wb::cli {

int run(const Args&) {
  throw std::runtime_error("'run' is not implemented yet");
}
int run_point(const Args&) {
  throw std::runtime_error("'_point' is not implemented yet");
}
int eval(const Args&) {
  throw std::runtime_error("'eval' is not implemented yet");
}
int report(const Args&) {
  throw std::runtime_error("'report' is not implemented yet");
}

}  // namespace wb::cli
