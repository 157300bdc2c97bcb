#include "process/verb_exit.h"

#include <spdlog/spdlog.h>

#include <functional>
#include <stdexcept>
#include <string>

namespace wb {

namespace {

// Rethrows the exception being handled to tell its kind (the caller's catch (...) has it).
int exit_code(const std::function<void(const std::string&)>& report) {
  try {
    throw;
  } catch (const std::invalid_argument& e) {
    report(e.what());
    return 2;
  } catch (const std::exception& e) {
    report(e.what());
    return 1;
  }
}

}  // namespace

int verb_exit_code(spdlog::logger& log) {
  return exit_code([&](const std::string& what) { log.error("{}", what); });
}

int verb_exit_code(std::ostream& err) {
  return exit_code([&](const std::string& what) { err << "error: " << what << "\n"; });
}

}  // namespace wb
