// What the benchmarks share: the median, option parsing, and the options of the two layer
// benchmarks (moe, ep), which time the same MoE layer and differ only in their defaults.
#pragma once

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/variables_map.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "bench.h"

namespace wb::bench {

// The median of v (the mean of the two middle values for an even count); v must not be empty.
double median(std::vector<double> v);

// Parses args into the variables opts writes (and into vm when given). False when --help was
// asked for: the help is then printed and the benchmark should return 0.
bool parse_options(const boost::program_options::options_description& opts, const Args& args,
                   boost::program_options::variables_map* vm = nullptr);

// Threads, repetitions and the sizes of the MoE layer; a benchmark sets its defaults here before
// add_layer_options.
struct LayerOptions {
  int threads = 0, repeats = 10, warmup = 2;
  std::int64_t batch = 256, tokens = 50, dim = 192, experts = 16, k = 2;
  std::vector<std::string> plugin_paths;
};

// The help text of the options whose meaning a benchmark qualifies (e.g. "per rank").
struct LayerOptionsHelp {
  std::string threads = "intra-op threads; 0 = all cores";
  std::string batch = "images";
  std::string experts = "experts E";
};

// Adds --threads --repeats --warmup --batch --tokens --dim --experts --k --plugin-path, writing
// into o; o's values at the call are the defaults shown.
void add_layer_options(boost::program_options::options_description& opts, LayerOptions& o,
                       const LayerOptionsHelp& help = {});

// Throws std::invalid_argument naming the benchmark unless the sizes and --repeats are positive
// and 1 <= k <= experts.
void check_layer_options(const LayerOptions& o, const std::string& bench);

}  // namespace wb::bench
