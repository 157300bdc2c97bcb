// How the ranks of a point find each other (docs/scale.md): from the environment that the
// standard launchers set (torchrun, SLURM's srun), or a file store for `--nproc N` on one
// machine. Knows no torch: the c10d communicator (dist/communicator.h) joins it.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

namespace wb {

struct Rendezvous {
  int rank = 0, world = 1;
  int local_rank = 0, local_world = 1;  // on this machine (picks the GPU)
  std::string master_addr;              // c10d TCPStore served by rank 0; empty: file store
  int master_port = 29500;
  std::string store_file;  // FileStore shared by the ranks when master_addr is empty
  // A rank that has not joined by then is an error that names it, not a hang.
  std::chrono::seconds timeout{300};
  std::string source = "--nproc";  // "torchrun", "slurm" or "--nproc", for messages
};

// Reads a variable: std::getenv by default; tests pass a map.
using EnvironmentReader = std::function<const char*(const char*)>;

// The rendezvous a launcher describes in the environment, or nullopt when none does:
// torchrun --no-python (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT) first, else srun (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, the tasks on this
// node from SLURM_TASKS_PER_NODE, the first host of SLURM_STEP_NODELIST or SLURM_JOB_NODELIST;
// MASTER_ADDR and MASTER_PORT win when set). WB_RENDEZVOUS_TIMEOUT (seconds) sets the timeout.
// Throws with the variable's name when one is malformed or contradicts another.
std::optional<Rendezvous> rendezvous_from_environment(const EnvironmentReader& env = nullptr);

// The first host of a SLURM node list: "node[01-04,07],gpu5" -> "node01".
std::string first_slurm_host(const std::string& nodelist);

}  // namespace wb
