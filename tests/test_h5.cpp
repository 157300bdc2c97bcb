// The HDF5 layer and the metrics file: round trips, resumed runs, and the promise that the file
// on disk is complete whatever happens to the writer (SIGKILL, full disk, blocked temp file).
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "fixture_temp_dir.h"
#include "h5/h5.h"
#include "h5/metrics.h"
#include "store/atomic_file.h"

namespace fs = std::filesystem;

namespace {

// Whether a flush left a temporary file (`<name>.<pid>.tmp`) behind in `dir`.
bool has_temporary(const std::filesystem::path& dir) {
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".tmp") return true;
  return false;
}

using wbtest::TempDir;

std::vector<std::int64_t> iota(std::int64_t n) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = i;
  return v;
}

double loss_at(std::int64_t step) {
  return 10.0 / (1.0 + static_cast<double>(step));
}

}  // namespace

TEST_CASE("metrics file round trip: series, eval results, config, provenance") {
  TempDir dir("h5");
  const fs::path file = dir.path() / "metrics.h5";
  {
    wb::MetricsFile m(file);
    m.set_config("[train]\nbatch = 64\n");
    m.set_provenance({{"seed", "3"}, {"point_id", "0123456789ab"}, {"torch_version", "1.13.1"}});
    for (std::int64_t s = 0; s < 5; ++s) {
      m.scalar("train/loss", s * 10, loss_at(s * 10));
      m.array("routing/moe1/expert_load", s * 10, {0.5 + s, 0.25, -1.0 * s});
    }
    m.eval_scalar("knn", "top1", 0.625);
    m.eval_array("linear", "confusion", {1, 2, 3, 4, 5, 6}, {2, 3});
    m.flush();
    // Rows buffered after a flush reach the file at the next one (here: the destructor).
    m.scalar("train/loss", 50, loss_at(50));
  }
  wb::MetricsReader r(file);
  CHECK(r.series_names() == std::vector<std::string>{"routing/moe1/expert_load", "train/loss"});
  const wb::Series loss = r.series("train/loss");
  CHECK(loss.steps == std::vector<std::int64_t>{0, 10, 20, 30, 40, 50});
  CHECK(loss.width == 1);
  CHECK_FALSE(loss.is_array);
  REQUIRE(loss.values.size() == 6);
  for (std::size_t i = 0; i < 6; ++i) CHECK(loss.values[i] == loss_at(loss.steps[i]));

  const wb::Series load = r.series("routing/moe1/expert_load");
  CHECK(load.is_array);
  CHECK(load.width == 3);
  REQUIRE(load.values.size() == 15);
  CHECK(load.values[3 * 4 + 0] == 4.5);
  CHECK(load.values[3 * 4 + 1] == 0.25);
  CHECK(load.values[3 * 4 + 2] == -4.0);

  const auto eval = r.eval();
  CHECK(eval.at("knn").at("top1") == std::vector<double>{0.625});
  CHECK(eval.at("linear").at("confusion") == std::vector<double>{1, 2, 3, 4, 5, 6});
  CHECK(r.eval_shape("knn", "top1").empty());
  CHECK(r.eval_shape("linear", "confusion") == std::vector<std::int64_t>{2, 3});
  CHECK(r.config() == "[train]\nbatch = 64\n");
  CHECK(r.provenance() == std::map<std::string, std::string>{{"point_id", "0123456789ab"},
                                                             {"seed", "3"},
                                                             {"torch_version", "1.13.1"}});
  CHECK_FALSE(r.has_series("train/lr"));
  CHECK_THROWS_WITH_AS(r.series("train/lr"), doctest::Contains("metrics.h5"), std::runtime_error);

  // The root carries the format attributes of docs/metrics.md.
  wb::h5::File raw = wb::h5::File::open(file, false);
  CHECK(raw.string_attribute("format") == "workbench-metrics");
  CHECK(raw.int_attribute("format_version") == 1);
  CHECK(raw.open_dataset("series/train/loss/step").shape() == std::vector<std::int64_t>{6});
  CHECK(raw.open_dataset("series/routing/moe1/expert_load/value").shape() ==
        std::vector<std::int64_t>{5, 3});
  CHECK_FALSE(has_temporary(dir.path()));
}

TEST_CASE("metrics file: a reopened file keeps its rows, eval results are replaced") {
  TempDir dir("h5");
  const fs::path file = dir.path() / "metrics.h5";
  {
    wb::MetricsFile m(file);
    m.scalar("train/lr", 1, 0.1);
    m.eval_scalar("knn", "top1", 0.5);
  }
  {
    wb::MetricsFile m(file);
    m.scalar("train/lr", 2, 0.2);
    m.eval_scalar("knn", "top1", 0.75);  // a re-evaluation overwrites
    m.eval_scalar("knn", "top5", 0.9);
    // The width of an existing series is known after reopening.
    CHECK_THROWS_AS(m.array("train/lr", 3, {1.0, 2.0}), std::invalid_argument);
  }
  wb::MetricsReader r(file);
  const auto lr = r.series("train/lr");
  CHECK(lr.steps == std::vector<std::int64_t>{1, 2});
  CHECK(lr.values == std::vector<double>{0.1, 0.2});
  CHECK(r.eval().at("knn") ==
        std::map<std::string, std::vector<double>>{{"top1", {0.75}}, {"top5", {0.9}}});
}

TEST_CASE("metrics file: truncate_after drops rows past a step, in the file and in the buffer") {
  TempDir dir("h5");
  const fs::path file = dir.path() / "metrics.h5";
  {
    wb::MetricsFile m(file);
    for (std::int64_t s = 0; s < 10; ++s) {
      m.scalar("train/loss", s, loss_at(s));
      m.array("routing/moe0/expert_load", s, {double(s), double(-s)});
    }
  }
  {
    wb::MetricsFile m(file);           // a run resumed from the checkpoint of step 4
    m.scalar("train/loss", 11, 99.0);  // buffered and past the step: dropped too
    m.truncate_after(4);
    m.scalar("train/loss", 5, -5.0);
    m.array("routing/moe0/expert_load", 5, {50.0, 51.0});
  }
  wb::MetricsReader r(file);
  const auto loss = r.series("train/loss");
  CHECK(loss.steps == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5});
  CHECK(loss.values[4] == loss_at(4));
  CHECK(loss.values[5] == -5.0);
  const auto load = r.series("routing/moe0/expert_load");
  CHECK(load.steps == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5});
  REQUIRE(load.values.size() == 12);
  CHECK(load.values[8] == 4.0);
  CHECK(load.values[9] == -4.0);
  CHECK(load.values[10] == 50.0);
  CHECK(load.values[11] == 51.0);
}

TEST_CASE("metrics file: bad names, widths and foreign files are refused with their names") {
  TempDir dir("h5");
  wb::MetricsFile m(dir.path() / "metrics.h5");
  CHECK_THROWS_AS(m.scalar("", 0, 1.0), std::invalid_argument);
  CHECK_THROWS_AS(m.scalar("/train/loss", 0, 1.0), std::invalid_argument);
  CHECK_THROWS_AS(m.scalar("train//loss", 0, 1.0), std::invalid_argument);
  CHECK_THROWS_AS(m.scalar("train/../loss", 0, 1.0), std::invalid_argument);
  CHECK_THROWS_AS(m.array("x", 0, {}), std::invalid_argument);
  m.array("x", 0, {1.0, 2.0});
  CHECK_THROWS_AS(m.array("x", 1, {1.0, 2.0, 3.0}), std::invalid_argument);
  CHECK_THROWS_AS(m.scalar("x", 1, 1.0), std::invalid_argument);
  CHECK_THROWS_AS(m.eval_array("knn", "m", {1.0, 2.0}, {3}), std::invalid_argument);
  CHECK_THROWS_AS(m.eval_scalar("a/b", "m", 1.0), std::invalid_argument);

  const fs::path text = dir.path() / "notes.h5";
  std::ofstream(text) << "not an HDF5 file\n";
  CHECK_THROWS_WITH_AS(wb::MetricsFile{text}, doctest::Contains("notes.h5"), std::runtime_error);
  CHECK_THROWS_WITH_AS(wb::MetricsReader{dir.path() / "missing.h5"},
                       doctest::Contains("missing.h5"), std::runtime_error);
  // A valid HDF5 file that is not a metrics file.
  wb::h5::File::create(dir.path() / "other.h5").close_checked();
  CHECK_THROWS_WITH_AS(wb::MetricsReader{dir.path() / "other.h5"},
                       doctest::Contains("not a workbench metrics file"), std::runtime_error);
}

TEST_CASE("h5 layer: errors name the file and object and carry HDF5's message") {
  TempDir dir("h5");
  wb::h5::File f = wb::h5::File::create(dir.path() / "x.h5");
  f.require_group("a/b/c").set_string_attribute("note", "héllo");
  CHECK(f.exists("a/b/c"));
  CHECK_FALSE(f.exists("a/x/c"));
  CHECK(f.open_group("a/b/c").string_attribute("note") == "héllo");
  try {
    f.open_dataset("a/b/nothing");
    FAIL("no exception");
  } catch (const wb::h5::Error& e) {
    const std::string message = e.what();
    CHECK(message.find("x.h5") != std::string::npos);
    CHECK(message.find("/a/b/nothing") != std::string::npos);
    CHECK(message.find("(") != std::string::npos);  // HDF5's own explanation is attached
  }
  auto ds = f.create_float64_series("s", 2);
  ds.append(std::vector<double>{1, 2, 3, 4});
  CHECK(ds.shape() == std::vector<std::int64_t>{2, 2});
  CHECK_THROWS_AS(ds.append(std::vector<double>{1, 2, 3}), wb::h5::Error);  // not whole rows
  ds.resize_rows(1);
  CHECK(ds.read_float64() == std::vector<double>{1, 2});
}

TEST_CASE("metrics file: a failed flush throws naming the file and keeps the previous one") {
  TempDir dir("h5");
  const fs::path file = dir.path() / "metrics.h5";
  wb::MetricsFile m(file);
  m.scalar("train/loss", 0, 1.0);
  m.flush();
  const auto before = fs::file_size(file);

  // Block the temporary file's name with a non-empty directory: copying onto it must fail,
  // whoever we are (a read-only directory does not stop root).
  const fs::path blocker = wb::temporary_path(file);
  fs::create_directory(blocker);
  std::ofstream(blocker / "keep") << "x";
  m.scalar("train/loss", 1, 2.0);
  CHECK_THROWS_WITH_AS(m.flush(), doctest::Contains(file.string().c_str()), std::runtime_error);
  CHECK(fs::file_size(file) == before);
  CHECK(wb::MetricsReader(file).series("train/loss").steps == std::vector<std::int64_t>{0});

  // The rows stay buffered: once the obstacle is gone, the next flush writes them.
  fs::remove_all(blocker);
  m.flush();
  CHECK(wb::MetricsReader(file).series("train/loss").steps == std::vector<std::int64_t>{0, 1});

  if (geteuid() != 0) {  // a read-only directory only stops a process that is not root
    m.scalar("train/loss", 2, 3.0);
    fs::permissions(dir.path(), fs::perms::owner_write, fs::perm_options::remove);
    CHECK_THROWS_WITH_AS(m.flush(), doctest::Contains(file.string().c_str()), std::runtime_error);
    fs::permissions(dir.path(), fs::perms::owner_write, fs::perm_options::add);
    CHECK(wb::MetricsReader(file).series("train/loss").steps == std::vector<std::int64_t>{0, 1});
  }
}

TEST_CASE("metrics file: a full disk (file size limit) fails the flush and keeps the file") {
  TempDir dir("h5");
  const fs::path file = dir.path() / "metrics.h5";
  {
    wb::MetricsFile m(file);
    for (std::int64_t s = 0; s < 100; ++s) m.scalar("train/loss", s, loss_at(s));
  }
  const auto before = fs::file_size(file);
  // In a child process: RLIMIT_FSIZE makes writes past the limit fail with EFBIG, as a full
  // disk would fail them with ENOSPC.
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    signal(SIGXFSZ, SIG_IGN);
    rlimit limit{static_cast<rlim_t>(before + 4096), static_cast<rlim_t>(before + 4096)};
    setrlimit(RLIMIT_FSIZE, &limit);
    int code = 3;
    // Never destroyed: its destructor would try the flush again (and warn) before _exit.
    auto* m = new wb::MetricsFile(file);
    try {
      m->array("big", 0, std::vector<double>(200000, 1.0));  // 1.6 MB
      m->flush();
      code = 1;  // the flush should have failed
    } catch (const std::runtime_error& e) {
      // The message names the file and says why: no space (not HDF5's "write failed").
      const std::string what = e.what();
      code = what.find(file.string()) == std::string::npos ? 2
             : what.find("no space left") != 0             ? 4
                                                           : 0;
    }
    _exit(code);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(fs::file_size(file) == before);
  wb::MetricsReader r(file);
  CHECK(r.series_names() == std::vector<std::string>{"train/loss"});
  CHECK(r.series("train/loss").steps == iota(100));
  CHECK_FALSE(has_temporary(dir.path()));
}

TEST_CASE("metrics file: after SIGKILL the file opens and holds a prefix of the rows") {
  std::mt19937 rng(std::random_device{}());
  for (int round = 0; round < 3; ++round) {
    TempDir dir("h5");
    const fs::path file = dir.path() / "metrics.h5";
    constexpr std::int64_t kFirst = 40;
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      close(ready[0]);
      try {
        wb::MetricsFile m(file);
        std::int64_t s = 0;
        for (; s < kFirst; ++s) {
          m.scalar("train/loss", s, loss_at(s));
          m.array("routing/moe1/expert_load", s, {double(s), 2.0 * double(s)});
        }
        m.flush();
        const char byte = 1;
        if (write(ready[1], &byte, 1) != 1) _exit(1);
        for (;; ++s) {  // appends and flushes until killed
          m.scalar("train/loss", s, loss_at(s));
          m.array("routing/moe1/expert_load", s, {double(s), 2.0 * double(s)});
          if (s % 3 == 0) m.flush();
        }
      } catch (...) {
        _exit(2);
      }
    }
    close(ready[1]);
    char byte = 0;
    REQUIRE(read(ready[0], &byte, 1) == 1);
    close(ready[0]);
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 250)(rng)));
    REQUIRE(kill(pid, SIGKILL) == 0);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status));

    wb::MetricsReader r(file);
    const auto loss = r.series("train/loss");
    const auto load = r.series("routing/moe1/expert_load");
    const std::int64_t n = static_cast<std::int64_t>(loss.steps.size());
    CAPTURE(n);
    CHECK(n >= kFirst);
    CHECK(loss.steps == iota(n));
    CHECK(load.steps == iota(n));
    REQUIRE(loss.values.size() == static_cast<std::size_t>(n));
    REQUIRE(load.values.size() == static_cast<std::size_t>(2 * n));
    bool values_match = true;
    for (std::int64_t s = 0; s < n; ++s) {
      const auto i = static_cast<std::size_t>(s);
      values_match = values_match && loss.values[i] == loss_at(s) &&
                     load.values[2 * i] == double(s) && load.values[2 * i + 1] == 2.0 * double(s);
    }
    CHECK(values_match);

    // A resumed writer carries on from that file, whatever temporary file was left behind.
    {
      wb::MetricsFile m(file);
      m.scalar("train/loss", n, loss_at(n));
    }
    CHECK(wb::MetricsReader(file).series("train/loss").steps == iota(n + 1));
  }
}
