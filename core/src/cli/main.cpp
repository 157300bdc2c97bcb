#include "cli/cli.h"

int main(int argc, char** argv) {
  return wb::cli::main(argc, argv);
}
