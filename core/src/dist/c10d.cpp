#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#ifdef WORKBENCH_HAVE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <stdexcept>

#include "compat/torch_compat.h"
#include "dist/communicator.h"

namespace wb {

namespace {

class C10d final : public Communicator {
 public:
  C10d(c10::intrusive_ptr<::c10d::Store> store, int rank, int world, c10::Device device)
      : rank_(rank), world_(world) {
    if (device.is_cuda()) {
#ifdef WORKBENCH_HAVE_NCCL
      group_ = c10::make_intrusive<::c10d::ProcessGroupNCCL>(store, rank, world);
      return;
#else
      throw std::runtime_error(
          "CUDA training over several processes needs NCCL, and this "
          "LibTorch was built without it");
#endif
    }
    // A rank that died surfaces as an error within minutes rather than a hang.
    auto options = ::c10d::ProcessGroupGloo::Options::create(std::chrono::minutes(5));
    options->devices.push_back(::c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    group_ = c10::make_intrusive<::c10d::ProcessGroupGloo>(store, rank, world, options);
  }

  int rank() const override {
    return rank_;
  }
  int world_size() const override {
    return world_;
  }

  at::Tensor all_gather(const at::Tensor& local) override {
    at::NoGradGuard no_grad;
    const at::Tensor input = local.detach().contiguous();
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int r = 0; r < world_; ++r) outputs[0].push_back(at::empty_like(input));
    std::vector<at::Tensor> inputs{input};
    group_->allgather(outputs, inputs)->wait();
    // Our own part keeps its autograd history; the others are constants.
    outputs[0][rank_] = local;
    return at::cat(outputs[0], 0);
  }

  void all_reduce_mean(std::vector<at::Tensor>& tensors) override {
    if (tensors.empty()) return;
    group_->allreduce(tensors)->wait();
    for (auto& t : tensors) t.div_(world_);
  }

  void barrier() override {
    group_->barrier()->wait();
  }

 private:
  int rank_, world_;
  c10::intrusive_ptr<compat::ProcessGroupBase> group_;
};

}  // namespace

std::unique_ptr<Communicator> make_c10d_communicator(const std::string& store_path, int rank,
                                                     int world_size, c10::Device device) {
  if (world_size < 1 || rank < 0 || rank >= world_size)
    throw std::invalid_argument("c10d: rank " + std::to_string(rank) + " outside world of " +
                                std::to_string(world_size));
  auto store = c10::make_intrusive<::c10d::FileStore>(store_path, world_size);
  return std::make_unique<C10d>(store, rank, world_size, device);
}

}  // namespace wb
