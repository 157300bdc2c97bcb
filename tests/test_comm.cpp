#include <doctest/doctest.h>

#include <ATen/ATen.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "dist/communicator.h"

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
