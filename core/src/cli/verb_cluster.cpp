// `workbench cluster RUN_DIR [options]`: MoCE's clustering of a run's training set
// (cluster/cluster_run.h).
#include <boost/program_options.hpp>
#include <iostream>

#include "cli/cli.h"
#include "cli/run_dir_args.h"
#include "cluster/cluster_run.h"

namespace wb::cli {

namespace po = boost::program_options;

int verb_cluster(const Args& args) {
  po::options_description opts("workbench cluster RUN_DIR [options]");
  std::string dir, out;
  ClusterRequest request;
  ClusteringOptions& o = request.options;
  opts.add_options()("help,h", "show this help")(
      "clusters", po::value(&o.clusters)->default_value(o.clusters), "number of clusters m")(
      "epochs", po::value(&o.epochs)->default_value(o.epochs), "SGD epochs over the features")(
      "batch", po::value(&o.batch)->default_value(o.batch), "images per SGD step")(
      "lr", po::value(&o.lr)->default_value(o.lr), "SGD learning rate")(
      "momentum", po::value(&o.momentum)->default_value(o.momentum), "SGD momentum")(
      "weight-decay", po::value(&o.weight_decay)->default_value(o.weight_decay),
      "SGD weight decay (the paper's appendix: 0.9, which does not converge with the unit-norm "
      "projection; docs/moce.md)")(
      "iterations", po::value(&o.iterations)->default_value(o.iterations),
      "Sinkhorn-Knopp iterations")("epsilon", po::value(&o.epsilon)->default_value(o.epsilon),
                                   "Sinkhorn entropy weight: Q proportional to exp(A / epsilon)")(
      "temperature", po::value(&o.temperature)->default_value(o.temperature),
      "softmax temperature of the scores in the cross-entropy (1 = the printed CE(Q, A))")(
      "assignment", po::value(&o.assignment)->default_value(o.assignment),
      "final cluster of an image: argmax of q (the last Sinkhorn-Knopp Q) or of scores (A)")(
      "seed", po::value(&o.seed)->default_value(o.seed), "initial centroids and batch order")(
      "out", po::value(&out), "output file (default RUN_DIR/clusters.h5)")(
      "threads", po::value(&request.threads),
      "intra-op threads (default: config threads, else all cores)")(
      "plugin-path", po::value(&request.plugin_paths)->composing(), "extra plugin folder or file");
  const po::variables_map vm = parse_run_dir_args(args, opts, dir);
  if (vm.count("help") || dir.empty()) {
    (vm.count("help") ? std::cout : std::cerr)
        << opts
        << "\nClusters the run's training set with its features (MoCE, docs/moce.md) and "
           "writes the centroids, every image's cluster and the data set's identity.\n";
    return vm.count("help") ? 0 : 2;
  }
  request.dir = dir;
  request.out = out;
  return cluster_run(request, std::cerr);
}

}  // namespace wb::cli
