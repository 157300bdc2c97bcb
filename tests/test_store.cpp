// The run store: atomic files, status.toml, point directories, and the scheduler/sweep that
// runs points as child processes, driven here by plain /bin/sh commands.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "e2e_fixture.h"
#include "fixture_temp_dir.h"
#include "process/scheduler.h"
#include "run/progress.h"
#include "run/sweep.h"
#include "store/atomic_file.h"
#include "store/point_lock.h"
#include "store/run_dir.h"
#include "store/status.h"

namespace fs = std::filesystem;
using wbtest::slurp;

namespace {

using wbtest::TempDir;

wb::Command shell(const std::string& name, const std::string& script) {
  return {name, {"/bin/sh", "-c", script}, {}};
}

wb::SweepItem sweep_item(const fs::path& root, const std::string& id, const std::string& script) {
  const fs::path dir = root / id;
  fs::create_directories(dir);
  return {id, "label " + id, dir, shell(id, script), {}};
}

}  // namespace

TEST_CASE("atomic file: writes, replaces, leaves no temporary, keeps the old file on failure") {
  TempDir dir("store");
  const fs::path file = dir.path() / "sub" / "status.toml";
  wb::write_file_atomic(file, "first\n");
  CHECK(slurp(file) == "first\n");
  wb::write_file_atomic(file, "second\n");
  CHECK(slurp(file) == "second\n");
  CHECK_FALSE(fs::exists(wb::temporary_path(file)));
  CHECK(wb::read_file(file) == "second\n");

  // A directory in the temporary file's place makes the write fail (even for root).
  fs::create_directories(wb::temporary_path(file) / "x");
  CHECK_THROWS_WITH_AS(wb::write_file_atomic(file, "third\n"),
                       doctest::Contains(wb::temporary_path(file).string().c_str()),
                       std::runtime_error);
  CHECK(slurp(file) == "second\n");
  // A parent that is a file cannot be created.
  CHECK_THROWS_WITH_AS(wb::write_file_atomic(file / "child", "x"), doctest::Contains("status.toml"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(wb::read_file(dir.path() / "nope"), doctest::Contains("nope"),
                       std::runtime_error);
}

TEST_CASE("status.toml round trip, defaults and errors") {
  TempDir dir("store");
  const fs::path file = dir.path() / "status.toml";
  CHECK(wb::read_status(file).state == wb::RunState::Queued);  // missing file

  wb::RunStatus s;
  s.state = wb::RunState::Failed;
  s.error = "killed by SIGKILL \"quoted\" \\ back\nsecond line\t\x01 é";
  s.signal = "SIGKILL";
  s.exit_code = 3;
  s.started = "2024-05-01T12:00:00Z";
  s.finished = "2024-05-01T12:01:30Z";
  s.elapsed_seconds = 90.125;
  s.pid = 4242;
  s.step = 120;
  s.total_steps = 1000;
  s.evaluators_done = {"knn", "linear"};
  wb::write_status(file, s);
  const wb::RunStatus r = wb::read_status(file);
  CHECK(r.state == wb::RunState::Failed);
  CHECK(r.error == s.error);
  CHECK(r.signal == "SIGKILL");
  CHECK(r.exit_code == 3);
  CHECK(r.started == s.started);
  CHECK(r.finished == s.finished);
  CHECK(r.elapsed_seconds == 90.125);
  CHECK(r.pid == 4242);
  CHECK(r.step == 120);
  CHECK(r.total_steps == 1000);
  CHECK(r.evaluators_done == std::vector<std::string>{"knn", "linear"});
  // Plain TOML that other tools can read.
  CHECK(toml::parse_file(file.string())["state"].value_or(std::string()) == "failed");
  CHECK(slurp(file).find("elapsed_seconds = 90.125\n") != std::string::npos);  // not 90.1250000001

  std::ofstream(file) << "state = \"sleeping\"\n";
  CHECK_THROWS_WITH_AS(wb::read_status(file), doctest::Contains("unknown state 'sleeping'"),
                       std::runtime_error);
  std::ofstream(file) << "state = \n";
  CHECK_THROWS_WITH_AS(wb::read_status(file), doctest::Contains("status.toml:1:"),
                       std::runtime_error);
  CHECK(wb::signal_name(SIGKILL) == "SIGKILL");
  CHECK(wb::signal_name(SIGSEGV) == "SIGSEGV");
  CHECK(wb::iso8601(0) == "1970-01-01T00:00:00Z");
}

TEST_CASE("point directory: config.toml, point.toml with assignments in order, experiment copy") {
  TempDir dir("store");
  wb::Experiment experiment;
  experiment.name = "ogar_sweep";
  experiment.source = "[experiment]\nname = \"ogar_sweep\"\n";
  wb::Point point;
  point.id = "0123456789ab";
  point.seed = 7;
  point.label = "losses.ogar.alpha=0.3 seed=7";
  point.assignments = {{"train.batch", "64"},
                       {"losses.ogar.alpha", "0.1"},
                       {"gate", "{ plugin = \"fixed\" }"},
                       {"data.classes", "[1, 2]"},
                       {"seed", "7"}};
  point.config.toml = "seed = 7\n[train]\nbatch = 64\n";

  const fs::path exp_dir = wb::experiment_dir(dir.path(), experiment.name);
  wb::write_experiment_copy(dir.path(), experiment);
  CHECK(slurp(exp_dir / "experiment.toml") == experiment.source);
  const wb::RunPaths paths(exp_dir / point.id);
  wb::prepare_point_dir(paths.dir, experiment, point);
  CHECK(slurp(paths.config) == point.config.toml);

  const wb::PointFile p = wb::read_point_file(paths.point);
  CHECK(p.experiment == "ogar_sweep");
  CHECK(p.id == point.id);
  CHECK(p.seed == 7);
  CHECK(p.label == point.label);
  CHECK(p.assignments == point.assignments);  // in order, literals exactly as written

  CHECK_THROWS(wb::experiment_dir(dir.path(), "../escape"));
  CHECK_THROWS(wb::experiment_dir(dir.path(), ""));
}

TEST_CASE("a point is complete when done with every configured evaluator") {
  wb::RunConfig config;
  config.evaluators = {{"knn", {}}, {"linear", {}}};
  wb::RunStatus status;
  status.state = wb::RunState::Done;
  status.evaluators_done = {"knn"};
  CHECK_FALSE(wb::point_complete(status, config));  // linear was added since
  status.evaluators_done = {"linear", "knn"};
  CHECK(wb::point_complete(status, config));
  status.state = wb::RunState::Failed;
  CHECK_FALSE(wb::point_complete(status, config));
}

TEST_CASE("record_result: what the parent writes for each way a child ends") {
  TempDir dir("store");
  const fs::path file = dir.path() / "status.toml";
  wb::CommandResult r;
  r.started = true;
  r.pid = 99;
  r.seconds = 2.5;

  SUBCASE("exit 0 without the child's own status: done") {
    const auto s = wb::record_result(file, r);
    CHECK(s.state == wb::RunState::Done);
    CHECK(s.pid == 99);
    CHECK(s.elapsed_seconds == 2.5);
    CHECK_FALSE(s.finished.empty());
    CHECK_FALSE(s.started.empty());
  }
  SUBCASE("exit 1 after the child wrote its own error: the error is kept") {
    wb::RunStatus child;
    child.state = wb::RunState::Failed;
    child.error = "loss is NaN at step 12";
    child.elapsed_seconds = 1.0;
    child.finished = "2024-05-01T12:00:00Z";
    wb::write_status(file, child);
    r.exit_code = 1;
    const auto s = wb::read_status((wb::record_result(file, r), file));
    CHECK(s.state == wb::RunState::Failed);
    CHECK(s.error == "loss is NaN at step 12");
    CHECK(s.exit_code == 1);
    CHECK(s.elapsed_seconds == 2.5);  // the parent's wall time, start-up included
  }
  SUBCASE("exit 3 while running: exited with code 3") {
    wb::RunStatus child;
    child.state = wb::RunState::Running;
    wb::write_status(file, child);
    r.exit_code = 3;
    const auto s = wb::record_result(file, r);
    CHECK(s.error == "exited with code 3");
    CHECK(wb::read_status(file).error == "exited with code 3");
  }
  SUBCASE("a signal: killed by its name") {
    r.signal = SIGSEGV;
    const auto s = wb::record_result(file, r);
    CHECK(s.state == wb::RunState::Failed);
    CHECK(s.error == "killed by SIGSEGV");
    CHECK(s.signal == "SIGSEGV");
  }
  SUBCASE("interrupted by Ctrl-C") {
    r.signal = SIGINT;
    r.interrupted = true;
    CHECK(wb::record_result(file, r).error == "interrupted");
  }
  SUBCASE("could not start") {
    wb::CommandResult never;
    never.start_error = "/nonexistent: No such file or directory";
    const auto s = wb::record_result(file, never);
    CHECK(s.state == wb::RunState::Failed);
    CHECK(s.error == "could not start: /nonexistent: No such file or directory");
  }
}

TEST_CASE("sweep: failures are recorded and the others still run") {
  TempDir dir("store");
  const std::vector<wb::SweepItem> items = {
      sweep_item(dir.path(), "ok1", "touch " + (dir.path() / "ok1" / "ran").string()),
      sweep_item(dir.path(), "code3", "exit 3"),
      sweep_item(dir.path(), "killed", "kill -9 $$"),
      sweep_item(dir.path(), "ok2", "touch " + (dir.path() / "ok2" / "ran").string()),
  };
  const wb::SweepReport report = wb::run_sweep(items, {});

  REQUIRE(report.outcomes.size() == 4);
  CHECK_FALSE(report.interrupted);
  CHECK(report.failed() == 2);
  CHECK(wb::read_status(dir.path() / "ok1" / "status.toml").state == wb::RunState::Done);
  const auto code3 = wb::read_status(dir.path() / "code3" / "status.toml");
  CHECK(code3.state == wb::RunState::Failed);
  CHECK(code3.error == "exited with code 3");
  CHECK(code3.exit_code == 3);
  const auto killed = wb::read_status(dir.path() / "killed" / "status.toml");
  CHECK(killed.state == wb::RunState::Failed);
  CHECK(killed.error == "killed by SIGKILL");
  CHECK(killed.signal == "SIGKILL");
  CHECK(wb::read_status(dir.path() / "ok2" / "status.toml").state == wb::RunState::Done);
  CHECK(fs::exists(dir.path() / "ok1" / "ran"));
  CHECK(fs::exists(dir.path() / "ok2" / "ran"));  // ran after two failures
  CHECK(report.outcomes[2].error == "killed by SIGKILL");

  const std::string summary = wb::format_summary(report.outcomes);
  CHECK(summary.rfind("id", 0) == 0);
  CHECK(summary.find("killed  label killed  failed") != std::string::npos);
  CHECK(summary.find("exited with code 3") != std::string::npos);
}

TEST_CASE("sweep: a point held by another trainer is left alone, a started one holds its lock") {
  TempDir dir("store");
  // The child checks that the point's lock is taken (by the descriptor it inherited): a
  // fresh `flock -n` on the file must fail.
  const std::string probe =
      "flock -n " + (dir.path() / "mine" / "point.lock").string() + " true && exit 7; exit 0";
  const std::vector<wb::SweepItem> items = {sweep_item(dir.path(), "held", "exit 0"),
                                            sweep_item(dir.path(), "mine", probe)};
  wb::RunStatus running;
  running.state = wb::RunState::Running;
  running.pid = 4242;
  wb::write_status(dir.path() / "held" / "status.toml", running);
  wb::PointLock other = wb::PointLock::try_acquire(dir.path() / "held");
  REQUIRE(other.held());
  std::ostringstream messages;
  wb::SweepOptions options;
  options.messages = &messages;
  const auto report = wb::run_sweep(items, options);
  INFO(messages.str());
  // The held point did not run and its status is its holder's.
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  CHECK(report.outcomes[0].elsewhere ==
        "pid " + std::to_string(getpid()) + " on host " + std::string(host));
  CHECK(report.outcomes[0].state == wb::RunState::Running);
  CHECK(wb::read_status(dir.path() / "held" / "status.toml").pid == 4242);
  CHECK(messages.str().find("skip held") != std::string::npos);
  CHECK(wb::format_summary(report.outcomes).find("running (elsewhere)") != std::string::npos);
  // The other ran holding its claim, and released it at its end.
  CHECK(report.outcomes[1].state == wb::RunState::Done);
  CHECK(wb::PointLock::try_acquire(dir.path() / "mine").held());
  other.release();
  CHECK(report.failed() == 0);
}

TEST_CASE("sweep: --fail-fast starts nothing after the first failure") {
  TempDir dir("store");
  const std::vector<wb::SweepItem> items = {
      sweep_item(dir.path(), "bad", "exit 3"),
      sweep_item(dir.path(), "never", "touch " + (dir.path() / "never" / "ran").string()),
  };
  wb::SweepOptions options;
  options.fail_fast = true;
  const auto report = wb::run_sweep(items, options);
  CHECK(report.outcomes[0].state == wb::RunState::Failed);
  CHECK(report.outcomes[1].state == wb::RunState::Queued);
  CHECK(wb::read_status(dir.path() / "never" / "status.toml").state == wb::RunState::Queued);
  CHECK_FALSE(fs::exists(dir.path() / "never" / "ran"));
  CHECK(wb::format_summary(report.outcomes).find("not run") != std::string::npos);
}

TEST_CASE("sweep: a rerun resets old errors and keeps the evaluators already done") {
  TempDir dir("store");
  auto item = sweep_item(dir.path(), "p", "exit 0");
  wb::RunStatus old;
  old.state = wb::RunState::Failed;
  old.error = "exited with code 3";
  old.evaluators_done = {"knn"};
  wb::write_status(dir.path() / "p" / "status.toml", old);
  const auto report = wb::run_sweep({item}, {});
  const auto s = wb::read_status(dir.path() / "p" / "status.toml");
  CHECK(s.state == wb::RunState::Done);
  CHECK(s.error.empty());
  CHECK(s.evaluators_done == std::vector<std::string>{"knn"});
}

TEST_CASE("scheduler: --jobs 2 runs two children at once") {
  TempDir dir("store");
  // Each child creates its file, then waits (at most ~10 s) for the other's: both can only
  // succeed if they run at the same time.
  auto waiter = [&](const std::string& mine, const std::string& other) {
    const std::string m = (dir.path() / mine).string(), o = (dir.path() / other).string();
    return "touch " + m + "; i=0; while [ ! -e " + o + " ] && [ $i -lt 200 ]; do sleep 0.05; " +
           "i=$((i+1)); done; [ -e " + o + " ]";
  };
  wb::SchedulerOptions options;
  options.jobs = 2;
  const auto report =
      wb::schedule_commands({shell("a", waiter("a", "b")), shell("b", waiter("b", "a"))}, options);
  CHECK(report.results[0].ok());
  CHECK(report.results[1].ok());
}

TEST_CASE("scheduler: prefixed output, one line at a time") {
  std::mutex mutex;
  std::vector<std::string> out, err;
  wb::SchedulerOptions options;
  options.jobs = 2;
  options.prefix_output = true;
  options.out = [&](const std::string& line) {
    std::lock_guard<std::mutex> lock(mutex);
    out.push_back(line);
  };
  options.err = [&](const std::string& line) {
    std::lock_guard<std::mutex> lock(mutex);
    err.push_back(line);
  };
  const auto report =
      wb::schedule_commands({shell("a1b2c3", "echo one; echo two; printf 'no newline'"),
                             shell("ffffff", "echo oops >&2")},
                            options);
  CHECK(report.results[0].ok());
  CHECK(out ==
        std::vector<std::string>{"[a1b2c3] one\n", "[a1b2c3] two\n", "[a1b2c3] no newline\n"});
  CHECK(err == std::vector<std::string>{"[ffffff] oops\n"});
}

TEST_CASE("scheduler: an interrupt reaches the running child and stops the rest") {
  TempDir dir("store");
  const std::vector<wb::SweepItem> items = {
      sweep_item(dir.path(), "long", "sleep 20"),
      sweep_item(dir.path(), "later", "exit 0"),
  };
  std::vector<wb::Command> commands = {items[0].command, items[1].command};
  wb::SchedulerOptions options;
  options.on_start = [](std::size_t, pid_t) { wb::request_interrupt(SIGINT); };
  const auto report = wb::schedule_commands(commands, options);
  CHECK(report.interrupted);
  CHECK(report.results[0].started);
  CHECK(report.results[0].interrupted);
  CHECK(report.results[0].signal == SIGINT);
  CHECK(report.results[0].seconds < 15);  // it did not sleep to the end
  CHECK_FALSE(report.results[1].started);
  CHECK(wb::record_result(dir.path() / "long" / "status.toml", report.results[0]).error ==
        "interrupted");
}

TEST_CASE("scheduler: a program that cannot start is reported, not fatal") {
  wb::SchedulerOptions options;
  std::vector<wb::Command> commands = {{"x", {"/nonexistent/program"}, {}}, shell("y", "exit 0")};
  const auto report = wb::schedule_commands(commands, options);
  CHECK_FALSE(report.results[0].started);
  CHECK(report.results[0].start_error.find("/nonexistent/program") != std::string::npos);
  CHECK(report.results[1].ok());
}

TEST_CASE("scheduler: environment variables reach the child") {
  TempDir dir("store");
  const fs::path out = dir.path() / "env";
  wb::Command c = shell("e", "printf %s \"$OMP_NUM_THREADS\" > " + out.string());
  c.env = {{"OMP_NUM_THREADS", "3"}};
  CHECK(wb::schedule_commands({c}, {}).results[0].ok());
  CHECK(slurp(out) == "3");
}

TEST_CASE("progress line and its pacing") {
  CHECK(wb::format_progress(1.25, 120, 1000, 4.12345, 312.54, 133) ==
        "epoch 1.25  step 120/1000  loss 4.1235  312.5 img/s  ETA 2m13s");
  CHECK(wb::format_duration(12.34) == "12.3s");
  CHECK(wb::format_duration(3725) == "1h02m");

  char* buffer = nullptr;
  std::size_t size = 0;
  std::FILE* f = open_memstream(&buffer, &size);
  {
    wb::ProgressPrinter pipe_printer(f, false, 5.0);
    CHECK(pipe_printer.update("a", 0.0));        // the first line always shows
    CHECK_FALSE(pipe_printer.update("b", 1.0));  // too soon
    CHECK(pipe_printer.update("c", 5.5));
    CHECK(pipe_printer.update("d", 6.0, true));  // the last line always shows
  }
  std::fflush(f);
  CHECK(std::string(buffer, size) == "a\nc\nd\n");
  std::fclose(f);
  std::free(buffer);

  buffer = nullptr;
  f = open_memstream(&buffer, &size);
  {
    wb::ProgressPrinter tty_printer(f, true, 0.5);
    tty_printer.update("a", 0.0);
    tty_printer.update("b", 1.0);
  }  // the destructor ends the rewritten line
  std::fflush(f);
  CHECK(std::string(buffer, size) == "\ra\033[K\rb\033[K\n");
  std::fclose(f);
  std::free(buffer);
}

TEST_CASE("workbench _point without a usable config.toml fails and says so in status.toml") {
  TempDir dir("store");
  const fs::path point = dir.path() / "p";
  fs::create_directories(point);
  CHECK(wbtest::workbench("_point " + point.string() + " --threads 1", dir.path()).first == 1);
  const auto s = wb::read_status(point / "status.toml");
  CHECK(s.state == wb::RunState::Failed);
  CHECK_FALSE(s.error.empty());
  CHECK_FALSE(s.finished.empty());
  CHECK(fs::exists(point / "run.log"));
  CHECK(slurp(point / "run.log").find(s.error) != std::string::npos);
}
