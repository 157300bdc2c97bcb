// Collectives the methods need, behind an interface so losses never know how many processes
// there are: single process = identity; several = c10d (Gloo on CPU, NCCL on GPU).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <stdexcept>
#include <vector>

namespace wb {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Concatenation along dim 0 of every rank's tensor, in rank order. No gradient flows through
  // the other ranks' parts (MoCo v3 keys and OGAR negatives are constants).
  virtual at::Tensor all_gather(const at::Tensor& local) = 0;
  // In-place average over ranks (gradients, metrics).
  virtual void all_reduce_mean(std::vector<at::Tensor>& tensors) = 0;
  virtual void barrier() = 0;
  // Sum over ranks, differentiable: the gradient that reaches each rank's `local` is the sum
  // over ranks of the gradients of their results, as if one process had computed the sum of
  // the joint batch (synchronised batch norm, docs/scale.md). Collective: every rank calls it,
  // in the same order, in the forward and (through autograd) in the backward.
  virtual at::Tensor all_reduce_sum(const at::Tensor& local) {
    if (world_size() == 1) return local;
    throw std::logic_error("this communicator has no all_reduce_sum");
  }
  // All-to-all with split sizes along dim 0, differentiable (expert parallelism,
  // docs/scale.md): rank r sends rows [sum(send_splits[0..s)), +send_splits[s]) of `local` to
  // rank s and receives recv_splits[s] rows from each rank s, concatenated in rank order. Every
  // rank's send_splits[s] must equal rank s's recv_splits[r]. The backward sends the gradients
  // back the same way with the splits swapped. Collective, like all_reduce_sum.
  virtual at::Tensor all_to_all(const at::Tensor& local,
                                const std::vector<std::int64_t>& send_splits,
                                const std::vector<std::int64_t>& recv_splits) {
    if (world_size() == 1 && send_splits == recv_splits) return local;
    throw std::logic_error("this communicator has no all_to_all");
  }
};

}  // namespace wb
