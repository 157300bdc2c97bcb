// How a verb that fails with an exception ends: the error reported where the verb writes (its
// run.log, or a stream) and turned into the exit code, the same for every verb.
#pragma once

#include <ostream>

namespace spdlog {
class logger;
}

namespace wb {

// Call inside `catch (...)` at the end of a verb: logs the exception being handled (its what())
// as an error and returns the exit code: 2 for std::invalid_argument (the request cannot be
// carried out as given: a wrong option, a run directory of the wrong kind, a checkpoint in the
// way), 1 for any other std::exception. Anything else is rethrown.
int verb_exit_code(spdlog::logger& log);
// The same written to `err` as "error: <what>".
int verb_exit_code(std::ostream& err);

}  // namespace wb
