// Communicator implementations. Losses only see wb::Communicator (SDK comm.h).
#pragma once

#include <memory>
#include <string>

#include "dist/rendezvous.h"
#include "workbench/comm.h"

namespace wb {

// One process: gathers return the local tensor, reductions do nothing.
std::unique_ptr<Communicator> make_single_process_communicator();

}  // namespace wb

#include <c10/core/Device.h>

namespace wb {

// Several processes through LibTorch's c10d: NCCL for CUDA devices when this build has it,
// Gloo otherwise. Ranks meet as `rendezvous` says (dist/rendezvous.h); every rank waits until
// all have joined, or fails after its timeout naming the first rank missing.
std::unique_ptr<Communicator> make_c10d_communicator(const Rendezvous& rendezvous,
                                                     c10::Device device);
// The same through a file store at `store_path` (same path for all ranks, one machine).
std::unique_ptr<Communicator> make_c10d_communicator(const std::string& store_path, int rank,
                                                     int world_size, c10::Device device);

}  // namespace wb
