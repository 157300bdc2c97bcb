#include "cli/run_dir_args.h"

namespace wb::cli {

namespace po = boost::program_options;

po::variables_map parse_run_dir_args(const Args& args, const po::options_description& opts,
                                     std::string& dir) {
  po::options_description hidden;
  hidden.add_options()("dir", po::value(&dir), "the run directory");
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description positional;
  positional.add("dir", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
  po::notify(vm);
  return vm;
}

}  // namespace wb::cli
