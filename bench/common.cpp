// Helpers the benchmarks share (common.h).
#include "common.h"

#include <algorithm>
#include <boost/program_options.hpp>
#include <iostream>
#include <stdexcept>

namespace wb::bench {

namespace po = boost::program_options;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

bool parse_options(const po::options_description& opts, const Args& args, po::variables_map* vm) {
  po::variables_map local;
  po::variables_map& m = vm ? *vm : local;
  po::store(po::command_line_parser(args).options(opts).run(), m);
  po::notify(m);
  if (m.count("help")) {
    std::cout << opts;
    return false;
  }
  return true;
}

void add_layer_options(po::options_description& opts, LayerOptions& o,
                       const LayerOptionsHelp& help) {
  opts.add_options()("threads", po::value(&o.threads)->default_value(o.threads),
                     help.threads.c_str())("repeats",
                                           po::value(&o.repeats)->default_value(o.repeats),
                                           "timed repetitions (median reported)")(
      "warmup", po::value(&o.warmup)->default_value(o.warmup), "untimed repetitions first")(
      "batch", po::value(&o.batch)->default_value(o.batch), help.batch.c_str())(
      "tokens", po::value(&o.tokens)->default_value(o.tokens), "tokens per image")(
      "dim", po::value(&o.dim)->default_value(o.dim), "token width d")(
      "experts", po::value(&o.experts)->default_value(o.experts), help.experts.c_str())(
      "k", po::value(&o.k)->default_value(o.k), "experts per token")(
      "plugin-path", po::value(&o.plugin_paths)->composing(), "extra plugin folder or file");
}

void check_layer_options(const LayerOptions& o, const std::string& bench) {
  if (o.repeats < 1 || o.batch < 1 || o.tokens < 1 || o.dim < 1 || o.experts < 1 || o.k < 1 ||
      o.k > o.experts)
    throw std::invalid_argument("bench " + bench +
                                ": sizes and --repeats must be positive, 1 <= k <= experts");
}

}  // namespace wb::bench
