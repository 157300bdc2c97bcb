// The `workbench` command line: one function per verb.
#pragma once

#include <string>
#include <vector>

namespace wb::cli {

using Args = std::vector<std::string>;  // the arguments after the verb

int plugins(const Args& args);
int run(const Args& args);
int run_point(const Args& args);  // internal: one grid point in a child process
int probe(const Args& args);      // internal: load one plugin library, report what was found
int eval(const Args& args);
int export_weights(const Args& args);
int report(const Args& args);
int bench(const Args& args);
int views(const Args& args);

int main(int argc, char** argv);

}  // namespace wb::cli
