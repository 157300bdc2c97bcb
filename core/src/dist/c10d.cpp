#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef WORKBENCH_HAVE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

#include "compat/torch_compat.h"
#include "dist/communicator.h"

namespace wb {

namespace {

bool loopback(const std::string& host) {
  return host.empty() || host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

// Gloo's interface: GLOO_SOCKET_IFNAME when set (as in PyTorch), loopback when all ranks are
// on this machine, else the address this host's name resolves to.
std::shared_ptr<::gloo::transport::Device> gloo_device(const Rendezvous& r) {
  if (const char* name = std::getenv("GLOO_SOCKET_IFNAME"); name && *name)
    return ::c10d::ProcessGroupGloo::createDeviceForInterface(name);
  if (loopback(r.master_addr))
    return ::c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return ::c10d::ProcessGroupGloo::createDefaultDevice();
}

std::string where(const Rendezvous& r) {
  return r.master_addr.empty() ? "the store " + r.store_file
                               : r.master_addr + ":" + std::to_string(r.master_port);
}

c10::intrusive_ptr<::c10d::Store> open_store(const Rendezvous& r) {
  if (r.master_addr.empty()) {
    auto store = c10::make_intrusive<::c10d::FileStore>(r.store_file, r.world);
    store->setTimeout(r.timeout);
    return store;
  }
  ::c10d::TCPStoreOptions options;
  options.port = static_cast<std::uint16_t>(r.master_port);
  options.isServer = r.rank == 0;
  options.numWorkers = static_cast<std::size_t>(r.world);
  options.waitWorkers = false;  // join() below waits, and names who is missing
  options.timeout = r.timeout;
  try {
    return c10::make_intrusive<::c10d::TCPStore>(r.master_addr, options);
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(r.rank) + " cannot " +
                             (r.rank == 0 ? "serve" : "reach rank 0's") + " c10d store at " +
                             where(r) + " (" + r.source + "): " + e.what());
  }
}

// Every rank announces itself, then waits for all others: a missing rank is an error that
// names it and the rendezvous, after the timeout.
void join(::c10d::Store& store, const Rendezvous& r) {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  const std::string me = std::string(host) + " pid " + std::to_string(getpid());
  store.set("wb/joined/" + std::to_string(r.rank), std::vector<std::uint8_t>(me.begin(), me.end()));
  for (int other = 0; other < r.world; ++other) {
    try {
      store.wait({"wb/joined/" + std::to_string(other)}, r.timeout);
    } catch (const std::exception&) {
      throw std::runtime_error("rank " + std::to_string(other) + " of " + std::to_string(r.world) +
                               " did not join the rendezvous at " + where(r) + " within " +
                               std::to_string(r.timeout.count()) + " s (" + r.source + ")");
    }
  }
}

at::Tensor sum_over_ranks(compat::ProcessGroupBase& group, const at::Tensor& t) {
  std::vector<at::Tensor> v{t.detach().clone(at::MemoryFormat::Contiguous)};
  group.allreduce(v)->wait();  // ReduceOp::SUM
  return v[0];
}

// Forward: the sum over ranks. Backward: the sum over ranks of the incoming gradients, since
// every rank's result depends on every rank's input.
class AllReduceSum : public torch::autograd::Function<AllReduceSum> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& local,
                            std::int64_t group) {
    ctx->saved_data["group"] = group;  // the communicator outlives every graph it is in
    return sum_over_ranks(*reinterpret_cast<compat::ProcessGroupBase*>(group), local);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    auto* group = reinterpret_cast<compat::ProcessGroupBase*>(ctx->saved_data["group"].toInt());
    return {sum_over_ranks(*group, grad[0]), at::Tensor()};
  }
};

// Rows of `t` to the other ranks (send[s] rows to rank s, in order), rows from them (recv[s] from
// rank s): Gloo and NCCL both take the single-tensor form with split sizes.
at::Tensor exchange_rows(compat::ProcessGroupBase& group, const at::Tensor& t,
                         std::vector<std::int64_t> send, std::vector<std::int64_t> recv) {
  at::Tensor input = t.detach().contiguous();
  std::vector<std::int64_t> shape = input.sizes().vec();
  shape[0] = 0;
  for (const auto n : recv) shape[0] += n;
  at::Tensor output = at::empty(shape, input.options());
  group.alltoall_base(output, input, recv, send)->wait();
  return output;
}

// Forward: the rows to their ranks. Backward: each row's gradient back to the rank it came from,
// the same exchange with the split sizes swapped.
class AllToAll : public torch::autograd::Function<AllToAll> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& local,
                            std::int64_t group, std::vector<std::int64_t> send,
                            std::vector<std::int64_t> recv) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["send"] = send;
    ctx->saved_data["recv"] = recv;
    return exchange_rows(*reinterpret_cast<compat::ProcessGroupBase*>(group), local, send, recv);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    auto* group = reinterpret_cast<compat::ProcessGroupBase*>(ctx->saved_data["group"].toInt());
    const auto send = ctx->saved_data["send"].toIntVector();
    const auto recv = ctx->saved_data["recv"].toIntVector();
    return {exchange_rows(*group, grad[0], recv, send), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class C10d final : public Communicator {
 public:
  C10d(c10::intrusive_ptr<::c10d::Store> store, const Rendezvous& r, c10::Device device)
      : rank_(r.rank), world_(r.world) {
    const int rank = r.rank, world = r.world;
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
    // A rank that died surfaces as an error after the timeout rather than a hang.
    auto options = ::c10d::ProcessGroupGloo::Options::create(r.timeout);
    options->devices.push_back(gloo_device(r));
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

  at::Tensor all_reduce_sum(const at::Tensor& local) override {
    return AllReduceSum::apply(local, reinterpret_cast<std::int64_t>(group_.get()));
  }

  at::Tensor all_to_all(const at::Tensor& local, const std::vector<std::int64_t>& send_splits,
                        const std::vector<std::int64_t>& recv_splits) override {
    const auto world = static_cast<std::size_t>(world_);
    std::int64_t rows = 0;
    for (const auto n : send_splits) rows += n;
    if (send_splits.size() != world || recv_splits.size() != world || local.dim() < 1 ||
        rows != local.size(0))
      throw std::invalid_argument("all_to_all: " + std::to_string(send_splits.size()) + " and " +
                                  std::to_string(recv_splits.size()) +
                                  " split sizes for a world of " + std::to_string(world_) +
                                  " and a tensor of " + std::to_string(local.size(0)) + " rows");
    return AllToAll::apply(local, reinterpret_cast<std::int64_t>(group_.get()), send_splits,
                           recv_splits);
  }

 private:
  int rank_, world_;
  c10::intrusive_ptr<compat::ProcessGroupBase> group_;
};

}  // namespace

std::unique_ptr<Communicator> make_c10d_communicator(const Rendezvous& r, c10::Device device) {
  if (r.world < 1 || r.rank < 0 || r.rank >= r.world)
    throw std::invalid_argument("c10d: rank " + std::to_string(r.rank) + " outside world of " +
                                std::to_string(r.world));
  auto store = open_store(r);
  join(*store, r);
  return std::make_unique<C10d>(store, r, device);
}

std::unique_ptr<Communicator> make_c10d_communicator(const std::string& store_path, int rank,
                                                     int world_size, c10::Device device) {
  Rendezvous r;
  r.rank = rank;
  r.world = world_size;
  r.store_file = store_path;
  return make_c10d_communicator(r, device);
}

}  // namespace wb
