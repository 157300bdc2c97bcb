// Command lines of the verbs that act on one run directory (eval, export, cluster, deploy,
// _point): their options plus the directory as the one positional argument.
#pragma once

#include <boost/program_options.hpp>

#include <string>

#include "cli/cli.h"

namespace wb::cli {

// Parses `args` with `opts` and a positional RUN_DIR stored in `dir` (left empty when absent).
boost::program_options::variables_map parse_run_dir_args(
    const Args& args, const boost::program_options::options_description& opts, std::string& dir);

}  // namespace wb::cli
