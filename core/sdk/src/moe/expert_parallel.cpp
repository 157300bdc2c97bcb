// Expert parallelism (docs/scale.md, "Expert parallelism"): route locally, exchange the
// per-expert counts, send each kept assignment's token to the rank that owns its expert, run the
// local experts there, send the outputs back and combine them with the routing weights.
#include "moe/expert_parallel.h"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "workbench/moe_layer.h"

namespace wb::moe {

namespace {

std::vector<std::int64_t> to_vector(const at::Tensor& t) {
  const at::Tensor host = t.to(at::kCPU).to(at::kLong).contiguous();
  const auto* p = host.data_ptr<std::int64_t>();
  return {p, p + host.numel()};
}

}  // namespace

at::Tensor expert_parallel_combine(const at::Tensor& x, const Routing& routing,
                                   std::int64_t experts, const at::Tensor& w1, const at::Tensor& b1,
                                   const at::Tensor& w2, const at::Tensor& b2, Communicator& comm) {
  const std::int64_t world = comm.world_size(), local = w1.size(0);
  if (local * world != experts)
    throw std::logic_error("expert parallelism: " + std::to_string(local) + " experts on each of " +
                           std::to_string(world) + " ranks, but the gate routes to " +
                           std::to_string(experts));
  const std::int64_t k = routing.experts.size(1);
  const auto index = routing.experts.options().dtype(at::kLong);

  // The kept assignments, grouped by expert (stable): hence by owning rank, in rank order.
  at::Tensor slot = at::arange(routing.experts.numel(), index);
  at::Tensor expert = routing.experts.reshape({-1});
  if (routing.kept.defined()) {
    const at::Tensor kept = routing.kept.reshape({-1});
    slot = slot.masked_select(kept);
    expert = expert.masked_select(kept);
  }
  const at::Tensor order = std::get<1>(at::sort(expert, /*stable=*/true, 0, false));
  slot = slot.index_select(0, order);
  expert = expert.index_select(0, order);
  const at::Tensor token = at::div(slot, k, "trunc");

  // Counts: row r of [N, E/N] is what this rank sends to rank r's experts; after the exchange,
  // row s is what rank s sends to this rank's experts.
  const at::Tensor sent_counts = at::zeros({experts}, index)
                                     .scatter_add_(0, expert, at::ones_like(expert))
                                     .view({world, local});
  const std::vector<std::int64_t> ones(static_cast<std::size_t>(world), 1);
  const at::Tensor recv_counts = comm.all_to_all(sent_counts, ones, ones);
  const std::vector<std::int64_t> send = to_vector(sent_counts.sum(1));
  const std::vector<std::int64_t> recv = to_vector(recv_counts.sum(1));

  // The tokens to their experts' ranks: from each rank s, grouped by local expert.
  const at::Tensor arrived = comm.all_to_all(x.index_select(0, token), send, recv);
  Routing here;
  here.experts = at::arange(local, index)
                     .repeat({world})
                     .repeat_interleave(recv_counts.reshape({-1}).to(index.device()))
                     .unsqueeze(1);
  here.weights = at::ones({arrived.size(0), 1}, arrived.options());
  here.kept = at::ones({arrived.size(0), 1}, index.dtype(at::kBool));
  // No token for any local expert: zero rows that still depend on what arrived (so that this
  // rank's backward joins the other ranks' reverse exchange) and on the weights (so that their
  // gradients are defined zeros, as one process's stacked expert weights get them).
  const at::Tensor outputs = arrived.size(0) > 0
                                 ? dispatch_combine(arrived, here, w1, b1, w2, b2)
                                 : arrived * 0 + 0 * (w1.sum() + b1.sum() + w2.sum() + b2.sum());

  // The outputs back to the ranks their tokens came from, in the order they were sent.
  const at::Tensor back = comm.all_to_all(outputs, recv, send);
  const at::Tensor weights = routing.weights.reshape({-1}).index_select(0, slot).unsqueeze(1);
  return at::zeros_like(x).index_add(0, token, (back * weights).to(x.scalar_type()));
}

}  // namespace wb::moe

namespace wb {

void MoeLayer::shard_experts(Communicator& comm) {
  if (comm_) throw std::logic_error("MoeLayer: experts already sharded");
  const std::int64_t experts = w1_.size(0), world = comm.world_size();
  if (experts % world != 0)
    throw std::invalid_argument("train.expert_parallel: a MoE layer's " + std::to_string(experts) +
                                " experts cannot be shared evenly between " +
                                std::to_string(world) + " ranks");
  const std::int64_t local = experts / world, first = comm.rank() * local;
  at::NoGradGuard no_grad;
  // set_data keeps the registered parameters (and whoever holds them) but changes their shape.
  for (at::Tensor* p : {&w1_, &b1_, &w2_, &b2_})
    p->set_data(p->detach().narrow(0, first, local).clone());
  comm_ = &comm;
  experts_ = experts;
}

void MoeLayer::gather_experts() {
  if (!comm_) return;
  at::NoGradGuard no_grad;
  for (at::Tensor* p : {&w1_, &b1_, &w2_, &b2_}) p->set_data(comm_->all_gather(p->detach()));
  comm_ = nullptr;
  experts_ = 0;
}

}  // namespace wb
