#include <ATen/ATen.h>

#include "dist/communicator.h"

namespace wb {

namespace {
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  at::Tensor all_gather(const at::Tensor& local) override { return local; }
  void all_reduce_mean(std::vector<at::Tensor>&) override {}
  void barrier() override {}
  at::Tensor all_reduce_sum(const at::Tensor& local) override { return local; }
};
}  // namespace

std::unique_ptr<Communicator> make_single_process_communicator() {
  return std::make_unique<SingleProcess>();
}

}  // namespace wb
