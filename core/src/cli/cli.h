// The `workbench` command line: one function per verb (cli/verb_<name>.cpp). A verb parses its
// options and calls the core; what it does is documented where that core function is declared.
#pragma once

#include <string>
#include <vector>

namespace wb::cli {

using Args = std::vector<std::string>;  // the arguments after the verb

int verb_plugins(const Args& args);  // plugin/loader.h
int verb_run(const Args& args);      // run/sweep.h: run_experiment
int verb_point(const Args& args);    // internal: run/point.h, one point in this process
int verb_stage(const Args& args);    // internal: run/stage.h, one cluster or deploy point
int verb_probe(
    const Args& args);            // internal: plugin/loader_probe.h, load libraries, report as TOML
int verb_eval(const Args& args);  // eval/on_demand.h
int verb_cluster(const Args& args);  // cluster/cluster_run.h
int verb_deploy(const Args& args);   // cluster/deploy.h
int verb_export(const Args& args);   // weights/export.h
int verb_report(const Args& args);   // report/report.h
int verb_bench(const Args& args);    // runs the separate workbench-bench executable (bench/)
int verb_views(const Args& args);    // data/view_pairs.h

int main(int argc, char** argv);

}  // namespace wb::cli
