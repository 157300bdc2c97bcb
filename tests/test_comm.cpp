#include <doctest/doctest.h>

#include <ATen/ATen.h>
#include <sys/wait.h>
#include <torch/nn/modules/batchnorm.h>
#include <unistd.h>

#include <filesystem>

#include "dist/communicator.h"
#include "workbench/layers.h"

namespace fs = std::filesystem;

TEST_CASE("single-process communicator is the identity") {
  auto comm = wb::make_single_process_communicator();
  const at::Tensor x = at::arange(6).reshape({3, 2});
  CHECK(comm->world_size() == 1);
  CHECK(at::equal(comm->all_gather(x), x));
  std::vector<at::Tensor> v{x.clone()};
  comm->all_reduce_mean(v);
  CHECK(at::equal(v[0], x));
}

TEST_CASE("c10d Gloo over two processes: all_gather in rank order and all_reduce_mean") {
  const fs::path store = fs::temp_directory_path() / ("wb_c10d_" + std::to_string(getpid()));
  fs::remove(store);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  const int rank = child == 0 ? 1 : 0;
  int ok = 1;
  try {
    auto comm = wb::make_c10d_communicator(store.string(), rank, 2, c10::Device(c10::kCPU));
    const at::Tensor mine = at::full({2, 3}, static_cast<float>(rank + 1));
    const at::Tensor all = comm->all_gather(mine);
    // rows 0-1 from rank 0 (ones), rows 2-3 from rank 1 (twos)
    ok &= all.sizes() == at::IntArrayRef({4, 3});
    ok &= at::equal(all.narrow(0, 0, 2), at::ones({2, 3}));
    ok &= at::equal(all.narrow(0, 2, 2), at::full({2, 3}, 2.0f));
    std::vector<at::Tensor> v{at::full({5}, rank == 0 ? 1.0f : 4.0f)};
    comm->all_reduce_mean(v);
    ok &= at::allclose(v[0], at::full({5}, 2.5f));
    comm->barrier();
  } catch (const std::exception& e) {
    ok = 0;
    MESSAGE("rank " << rank << ": " << e.what());
  }
  if (child == 0) _exit(ok ? 0 : 1);
  int status = 0;
  waitpid(child, &status, 0);
  fs::remove(store);
  CHECK(ok == 1);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("synchronised batch norm over 2 Gloo ranks equals batch norm on the joint batch") {
  // Uneven halves (2 and 5 rows) so that the counts matter; float64 so that 1e-10 holds.
  at::manual_seed(3);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor joint = at::randn({7, 4}, f64) * 3 + 1;
  const at::Tensor upstream = at::randn({7, 4}, f64);
  const at::Tensor weight = at::randn({4}, f64), bias = at::randn({4}, f64);
  auto make_bn = [&] {
    torch::nn::BatchNorm1d bn(torch::nn::BatchNorm1dOptions(4));
    bn->to(at::kDouble);
    at::NoGradGuard no_grad;
    bn->weight.copy_(weight);
    bn->bias.copy_(bias);
    return bn;
  };
  // One process, the joint batch.
  torch::nn::BatchNorm1d single = make_bn();
  const at::Tensor x = joint.clone().set_requires_grad(true);
  const at::Tensor y = single->forward(x);
  (y * upstream).sum().backward();

  const fs::path store = fs::temp_directory_path() / ("wb_syncbn_" + std::to_string(getpid()));
  fs::remove(store);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  const int rank = child == 0 ? 1 : 0;
  const std::int64_t begin = rank == 0 ? 0 : 2, rows = rank == 0 ? 2 : 5;
  int ok = 1;
  std::string failure;
  try {
    auto comm = wb::make_c10d_communicator(store.string(), rank, 2, c10::Device(c10::kCPU));
    torch::nn::BatchNorm1d bn = make_bn();
    const at::Tensor mine = joint.narrow(0, begin, rows).clone().set_requires_grad(true);
    const at::Tensor out = wb::synced_batch_norm(mine, *bn, *comm);
    (out * upstream.narrow(0, begin, rows)).sum().backward();
    auto near = [&](const at::Tensor& a, const at::Tensor& b, const char* what) {
      if (!at::allclose(a, b, 1e-10, 1e-10)) {
        ok = 0;
        failure += std::string(what) + " ";
      }
    };
    near(out, y.narrow(0, begin, rows), "output");
    near(mine.grad(), x.grad().narrow(0, begin, rows), "input gradient");
    // Parameter gradients: each rank holds its part; their sum is the joint gradient.
    const at::Tensor grads = comm->all_gather(at::stack({bn->weight.grad(), bn->bias.grad()}));
    near(grads.narrow(0, 0, 2) + grads.narrow(0, 2, 2),
         at::stack({single->weight.grad(), single->bias.grad()}), "parameter gradients");
    near(bn->running_mean, single->running_mean, "running mean");
    near(bn->running_var, single->running_var, "running variance");
    comm->barrier();
  } catch (const std::exception& e) {
    ok = 0;
    failure += e.what();
  }
  if (child == 0) _exit(ok ? 0 : 1);
  int status = 0;
  waitpid(child, &status, 0);
  fs::remove(store);
  INFO(failure);
  CHECK(ok == 1);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
