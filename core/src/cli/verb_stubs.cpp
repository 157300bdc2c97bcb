// Verbs not built yet. Each moves to its own file when it is implemented.
#include <stdexcept>

#include "cli/cli.h"

namespace wb::cli {

int eval(const Args&) { throw std::runtime_error("'eval' is not implemented yet"); }

}  // namespace wb::cli
