#include "cli/cli.h"
#include "process/threads.h"  // tune_allocator

int main(int argc, char** argv) {
  wb::tune_allocator();
  return wb::cli::main(argc, argv);
}
