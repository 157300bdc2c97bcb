// Reports: a fake sweep (real experiment parsing, point.toml/status.toml written by the store,
// metrics.h5 written through MetricsFile) turned into report.md / report.csv / index.html and
// plots, checked against means and sample stds computed here.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "config/experiment.h"
#include "config_test_registry.h"
#include "e2e_fixture.h"
#include "fixture_temp_dir.h"
#include "h5/metrics.h"
#include "process/spawn.h"
#include "report/gnuplot.h"
#include "report/report.h"
#include "report/settings.h"
#include "report/stats.h"
#include "report/table.h"
#include "store/run_dir.h"
#include "store/status.h"
#include "workbench/format.h"

namespace fs = std::filesystem;
using wbtest::slurp;

namespace {

using wbtest::TempDir;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Independent statistics for the expected values.
double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}
double sample_std(const std::vector<double>& v) {
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}
std::string fmt(const char* format, double a, double b = 0) {
  char text[128];
  std::snprintf(text, sizeof text, format, a, b);
  return text;
}

// The cells of the Markdown table row that starts with `first` ("| 0.0 |").
std::vector<std::string> md_row(const std::string& md, const std::string& first) {
  std::istringstream in(md);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(first, 0) != 0) continue;
    std::vector<std::string> cells;
    std::size_t start = 1;
    while (start < line.size()) {
      const std::size_t end = line.find(" |", start);
      if (end == std::string::npos) break;
      std::string cell = line.substr(start, end - start);
      cells.push_back(cell.substr(cell.find_first_not_of(' ')));
      start = end + 2;
    }
    return cells;
  }
  FAIL("no Markdown row starting with " << first);
  return {};
}

// A small RFC 4180 reader: quoted fields, doubled quotes.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows(1);
  std::string field;
  bool quoted = false, any = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      rows.back().push_back(field);
      field.clear();
    } else if (c == '\n') {
      rows.back().push_back(field);
      field.clear();
      rows.emplace_back();
    } else {
      field += c;
    }
    any = true;
  }
  if (!field.empty() || (any && !rows.back().empty())) rows.back().push_back(field);
  if (rows.back().empty()) rows.pop_back();
  return rows;
}

// CSV rows as column -> field maps.
std::vector<std::map<std::string, std::string>> csv_records(const fs::path& file) {
  const auto rows = parse_csv(slurp(file));
  REQUIRE(!rows.empty());
  std::vector<std::map<std::string, std::string>> out;
  for (std::size_t r = 1; r < rows.size(); ++r) {
    REQUIRE(rows[r].size() == rows[0].size());
    std::map<std::string, std::string> rec;
    for (std::size_t c = 0; c < rows[0].size(); ++c) rec[rows[0][c]] = rows[r][c];
    out.push_back(rec);
  }
  return out;
}

double number(const std::string& field) {
  REQUIRE(!field.empty());
  std::size_t used = 0;
  const double v = std::stod(field, &used);
  REQUIRE(used == field.size());
  return v;
}

bool is_png(const fs::path& file) {
  const std::string bytes = slurp(file);
  return bytes.size() > 100 && bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0;
}

const char* const kExperimentA = R"toml(
[experiment]
name = "toy_a"
seeds = [0, 1, 2]

[base]
backbone = { plugin = "vit", dim = 8 }
losses = [{ plugin = "moco" }, { plugin = "ogar" }]
evaluators = [{ plugin = "knn" }]

[grid]
losses.ogar.alpha = [0.0, 0.3]

[report]
columns = ["linear_probe/top1", "knn/loss", "linear_probe/top5"]
names = { "linear_probe/top1" = "linear", "losses.ogar.alpha" = "α" }
precision = 1
title = "Table 5 (toy)"
)toml";

const char* const kExperimentB = R"(
[experiment]
name = "toy_b"

[base]
backbone = { plugin = "vit", dim = 8 }
gate = { plugin = "noisy_topk", k = 2 }
losses = [{ plugin = "moco" }, { plugin = "ogar", alpha = 0.5 }]

[grid]
gate.k = [1, 2]
)";

// Per (alpha, seed) of experiment A: linear probe top-1, kNN loss, top-5 (alpha 0 only).
const std::map<double, std::vector<double>> kTop1 = {{0.0, {70.0, 71.0, 72.0}},
                                                     {0.3, {73.0, 75.0}}};
const std::map<double, std::vector<double>> kLoss = {{0.0, {0.5, 0.7, 0.9}}, {0.3, {0.9, 1.1}}};
const std::vector<double> kTop5 = {90.0, 91.0, 92.0};
const std::vector<double> kSeconds = {10.0, 20.0, 30.0};  // by seed
// Layer 0 of routing_consistency's CLS arrays: corresponding 1.2 + alpha + 0.1 seed,
// non-corresponding 0.9 + 0.05 seed.
const double kCorr0 = 1.2, kNon0 = 0.9;

struct Sweep {
  TempDir tmp{"report"};
  fs::path runs;
  wb::Registry registry;
  std::string failed_id;
  std::string png;  // an evaluator image of experiment A

  Sweep() : runs(tmp.path() / "runs") {
    wb::test::add_fake_plugins(registry);
    write_a();
    write_b();
  }

  wb::Experiment parse(const std::string& text) {
    return wb::parse_experiment(text, "exp.toml", registry);
  }

  // Series every done point has: a training loss, a loss term, routing statistics.
  static void series(wb::MetricsFile& m, double seed, double alpha) {
    for (std::int64_t step = 0; step <= 20; step += 10) {
      m.scalar("train/loss", step, 2.0 - 0.05 * static_cast<double>(step) + 0.01 * seed);
      m.scalar("loss/ogar/gate", step, alpha + 0.001 * static_cast<double>(step));
      for (int layer : {1, 3}) {
        const std::string p = "routing/moe" + std::to_string(layer) + "/";
        m.scalar(p + "load_entropy", step, std::log(4.0) - alpha * static_cast<double>(step) / 20);
        m.array(p + "expert_load", step, {0.4, 0.3, 0.2, 0.1});
      }
    }
  }

  void write_a() {
    const wb::Experiment e = parse(kExperimentA);
    REQUIRE(e.points.size() == 6);
    wb::write_experiment_copy(runs, e);
    for (const auto& p : e.points) {
      const fs::path dir = wb::experiment_dir(runs, e.name) / p.id;
      wb::prepare_point_dir(dir, e, p);
      const double alpha = p.config.losses[1].params.real("alpha");
      const std::size_t s = static_cast<std::size_t>(p.seed);
      wb::RunStatus status;
      status.elapsed_seconds = kSeconds[s];
      wb::MetricsFile m(dir / "metrics.h5");
      if (alpha > 0 && p.seed == 2) {  // the failed point; its partial metrics must not count
        status.state = wb::RunState::Failed;
        status.error = "exited with code 3";
        status.exit_code = 3;
        m.eval_scalar("linear_probe", "top1", 0.0);
        failed_id = p.id;
      } else {
        status.state = wb::RunState::Done;
        m.eval_scalar("linear_probe", "top1", kTop1.at(alpha)[s]);
        m.eval_scalar("knn", "loss", kLoss.at(alpha)[s]);
        if (alpha == 0.0) m.eval_scalar("linear_probe", "top5", kTop5[s]);
        const double shift = alpha;  // CR-MoE separates corresponding tokens better
        const double by_seed = 0.1 * static_cast<double>(p.seed);
        m.eval_array("routing_consistency", "cls_corresponding",
                     {kCorr0 + shift + by_seed, 1.1 + shift}, {2});
        m.eval_array("routing_consistency", "cls_noncorresponding", {kNon0 + by_seed / 2, 0.8},
                     {2});
        m.eval_array("routing_consistency", "patch_corresponding", {1.5 + shift, 1.0 + shift}, {2});
        m.eval_array("routing_consistency", "patch_noncorresponding", {0.7, 0.9}, {2});
        m.eval_array("knn", "confusion", {1, 0, 0, 1}, {2, 2});  // not a table column
        series(m, static_cast<double>(p.seed), alpha);
        if (alpha == 0.0 && p.seed == 0) {
          fs::create_directories(dir / "eval" / "maps");
          png = (dir / "eval" / "maps" / "routing map.png").string();
          std::ofstream(png, std::ios::binary) << "\x89PNG\r\n\x1a\nnot really an image";
        }
      }
      m.flush();
      wb::write_status(dir / "status.toml", status);
    }
  }

  void write_b() {
    const wb::Experiment e = parse(kExperimentB);
    REQUIRE(e.points.size() == 2);
    wb::write_experiment_copy(runs, e);
    for (const auto& p : e.points) {
      const fs::path dir = wb::experiment_dir(runs, e.name) / p.id;
      wb::prepare_point_dir(dir, e, p);
      const std::int64_t k = p.config.gate.params.integer("k");
      wb::MetricsFile m(dir / "metrics.h5");
      m.eval_scalar("linear_probe", "top1", k == 1 ? 80.0 : 60.0);
      m.eval_scalar("knn", "top1", 50.0);
      series(m, 0, 0.0);
      m.flush();
      wb::RunStatus status;
      status.state = wb::RunState::Done;
      status.elapsed_seconds = 100;
      wb::write_status(dir / "status.toml", status);
    }
  }
};

}  // namespace

TEST_CASE("mean_std: mean and sample std, non-finite values are left out") {
  const wb::MeanStd s = wb::mean_std({1.0, 2.0, 4.0, NAN});
  CHECK(s.n == 3);
  CHECK(s.mean == doctest::Approx(7.0 / 3));
  CHECK(s.std == doctest::Approx(sample_std({1.0, 2.0, 4.0})));
  const wb::MeanStd one = wb::mean_std({5.0});
  CHECK(one.n == 1);
  CHECK(one.mean == 5.0);
  CHECK(std::isnan(one.std));
  CHECK(wb::mean_std({}).n == 0);

  wb::Series a, b;  // aligned by step: a has 0, 10, 20; b only 10 and 20
  a.steps = {0, 10, 20};
  a.values = {1.0, 2.0, 3.0};
  b.steps = {10, 20};
  b.values = {4.0, 7.0};
  const wb::MeanCurve c = wb::mean_curve({&a, &b});
  REQUIRE(c.steps == std::vector<std::int64_t>{0, 10, 20});
  CHECK(c.values[0].n == 1);
  CHECK(c.values[0].mean == 1.0);
  CHECK(c.values[1].mean == 3.0);
  CHECK(c.values[2].mean == 5.0);
  CHECK(c.values[2].std == doctest::Approx(std::sqrt(8.0)));

  CHECK(wb::format_stat(wb::mean_std({70.6, 70.8}), 1, false) == "70.7 ± 0.14");
  CHECK(wb::format_stat(wb::mean_std({70.6}), 1, true) == "70.6 (n=1)");
  CHECK(wb::format_stat(wb::MeanStd{}, 1, false) == "—");
  CHECK(wb::lower_is_better("knn/loss"));
  CHECK(wb::lower_is_better("routing/load_cv2"));
  CHECK(wb::lower_is_better("fewshot/top1_error"));
  CHECK_FALSE(wb::lower_is_better("linear_probe/top1"));
}

TEST_CASE("[report] table: accepted by the experiment parser, read and checked by the report") {
  wb::Registry registry;
  wb::test::add_fake_plugins(registry);
  const wb::Experiment e = wb::parse_experiment(kExperimentA, "a.toml", registry);
  CHECK(e.points.size() == 6);
  const wb::ExperimentHeader h = wb::parse_experiment_header(e.source, "a.toml");
  CHECK(h.name == "toy_a");
  CHECK(h.report.columns ==
        std::vector<std::string>{"linear_probe/top1", "knn/loss", "linear_probe/top5"});
  CHECK(h.report.names.at("losses.ogar.alpha") == "α");
  CHECK(h.report.names.at("linear_probe/top1") == "linear");
  CHECK(h.report.precision == 1);
  CHECK(h.report.title == "Table 5 (toy)");

  const std::string base = "[experiment]\nname = \"x\"\n[report]\n";
  try {
    wb::parse_experiment_header(base + "colums = [\"a/b\"]\n", "x.toml");
    FAIL("expected a ConfigError");
  } catch (const wb::ConfigError& err) {
    CHECK(err.file == "x.toml");
    CHECK(err.line == 4);
    CHECK(contains(err.message, "unknown key 'colums' in [report]; did you mean 'columns'?"));
  }
  CHECK_THROWS_WITH_AS(wb::parse_experiment_header(base + "precision = 20\n", "x.toml"),
                       doctest::Contains("x.toml:4"), wb::ConfigError);
  CHECK_THROWS_WITH_AS(wb::parse_experiment_header(base + "columns = [1]\n", "x.toml"),
                       doctest::Contains("metric names"), wb::ConfigError);
  const auto b = wb::parse_experiment_header(
      base + "baseline = { \"losses.ogar.alpha\" = 0.0, gate = { plugin = \"fixed\" } }\n",
      "x.toml");
  REQUIRE(b.report.baseline.size() == 2);
  CHECK(b.report.baseline[0] ==
        std::make_pair(std::string("losses.ogar.alpha"), std::string("0.0")));
  CHECK(b.report.baseline[1].first == "gate");
}

TEST_CASE("report of one sweep: rows per group, mean ± std, best marks, failed point, CSV") {
  Sweep sweep;
  const fs::path dir = sweep.runs / "toy_a";
  wb::ReportOptions options;
  options.plots = false;  // the tables do not need gnuplot
  const wb::ReportResult result = wb::write_report({dir}, options);
  CHECK(result.dir == fs::absolute(dir / "report"));
  CHECK(result.plot_error.empty());
  CHECK(result.warnings.empty());

  // Markdown: title, header with display names, one row per alpha in ascending order.
  const std::string md = slurp(dir / "report" / "report.md");
  CHECK(md.rfind("# Table 5 (toy)\n", 0) == 0);
  CHECK(contains(md, "| α | linear | knn/loss | linear_probe/top5 | seeds | time |"));
  CHECK(md.find("| 0.0 |") < md.find("| 0.3 |"));
  CHECK(contains(md, "6 points in 2 configurations; 5 done, 1 failed, 0 not finished"));

  // The number of seeds differs (3 vs 2), so n is shown; precision 1, std one digit more.
  const auto& t0 = kTop1.at(0.0);
  const auto& t3 = kTop1.at(0.3);
  const auto& l0 = kLoss.at(0.0);
  const auto& l3 = kLoss.at(0.3);
  const auto row0 = md_row(md, "| 0.0 |");
  const auto row3 = md_row(md, "| 0.3 |");
  REQUIRE(row0.size() == 6);
  REQUIRE(row3.size() == 6);
  CHECK(row0[1] == fmt("%.1f ± %.2f (n=3)", mean_of(t0), sample_std(t0)));
  CHECK(row3[1] == "**" + fmt("%.1f ± %.2f (n=2)", mean_of(t3), sample_std(t3)) + "**");
  // kNN loss: lower is better, so the alpha = 0 row (mean 0.7 < 1.0) is the best one.
  CHECK(row0[2] == "**" + fmt("%.1f ± %.2f (n=3)", mean_of(l0), sample_std(l0)) + "**");
  CHECK(row3[2] == fmt("%.1f ± %.2f (n=2)", mean_of(l3), sample_std(l3)));
  // Top-5 has values in one row only: nothing to compare, no bold.
  CHECK(row0[3] == fmt("%.1f ± %.2f (n=3)", mean_of(kTop5), sample_std(kTop5)));
  CHECK(row3[3] == "—");  // nobody measured top-5 for alpha = 0.3
  CHECK(row0[4] == "3/3");
  CHECK(row3[4] == "2/3, 1 failed");
  CHECK(row0[5] == fmt("%.1f s", mean_of(kSeconds)));
  CHECK(row3[5] == fmt("%.1f s", mean_of({kSeconds[0], kSeconds[1]})));

  // The failed point is listed with its reason.
  CHECK(contains(md, "## Failed and unfinished points"));
  CHECK(contains(
      md, "- `" + sweep.failed_id + "` losses.ogar.alpha=0.3 seed=2: failed: exited with code 3"));

  // CSV: raw column ids, mean / std / n / best as separate machine-readable fields.
  const auto csv = csv_records(dir / "report" / "report.csv");
  REQUIRE(csv.size() == 2);
  CHECK(csv[0].at("losses.ogar.alpha") == "0.0");
  CHECK(csv[1].at("losses.ogar.alpha") == "0.3");
  CHECK(number(csv[0].at("linear_probe/top1.mean")) == doctest::Approx(mean_of(t0)).epsilon(1e-12));
  CHECK(number(csv[0].at("linear_probe/top1.std")) ==
        doctest::Approx(sample_std(t0)).epsilon(1e-12));
  CHECK(csv[0].at("linear_probe/top1.n") == "3");
  CHECK(csv[0].at("linear_probe/top1.best") == "0");
  CHECK(number(csv[1].at("linear_probe/top1.mean")) == doctest::Approx(mean_of(t3)).epsilon(1e-12));
  CHECK(number(csv[1].at("linear_probe/top1.std")) ==
        doctest::Approx(sample_std(t3)).epsilon(1e-12));
  CHECK(csv[1].at("linear_probe/top1.n") == "2");
  CHECK(csv[1].at("linear_probe/top1.best") == "1");
  CHECK(csv[0].at("knn/loss.best") == "1");
  CHECK(csv[1].at("knn/loss.best") == "0");
  CHECK(number(csv[1].at("knn/loss.std")) == doctest::Approx(sample_std(l3)).epsilon(1e-12));
  CHECK(csv[1].at("linear_probe/top5.mean").empty());
  CHECK(csv[1].at("linear_probe/top5.n") == "0");
  CHECK(csv[1].at("seeds_done") == "2");
  CHECK(csv[1].at("seeds_total") == "3");
  CHECK(csv[1].at("seeds_failed") == "1");
  CHECK(csv[0].at("seconds_mean") == "20");
  CHECK(csv[0].count("knn/confusion.mean") == 0);  // arrays are not table columns

  // index.html: the same table, the failed point, the evaluator image linked relatively.
  const std::string html = slurp(dir / "report" / "index.html");
  CHECK(contains(html, "<title>Table 5 (toy)</title>"));
  CHECK(contains(html, "<b>" + fmt("%.1f ± %.2f (n=2)", mean_of(t3), sample_std(t3)) + "</b>"));
  CHECK(contains(html, sweep.failed_id));
  CHECK(contains(html, "failed: exited with code 3"));
  const std::string image =
      fs::path(sweep.png).lexically_relative(fs::absolute(dir / "report")).generic_string();
  CHECK(image.rfind("../", 0) == 0);
  std::string encoded = image;
  encoded.replace(encoded.find(' '), 1, "%20");
  CHECK(contains(html, "<img src=\"" + encoded + "\""));
  CHECK(contains(html, "routing map.png"));  // the caption
}

TEST_CASE("report: Fig. 3 as a table per MoE layer, gaps taken per seed") {
  Sweep sweep;
  const fs::path dir = sweep.runs / "toy_a";
  wb::ReportOptions options;
  options.plots = false;  // the table needs no gnuplot
  wb::write_report({dir}, options);
  const std::string md = slurp(dir / "report" / "report.md");
  REQUIRE(contains(md, "## Routing consistency per MoE layer (CR-MoE Fig. 3)"));
  // After the comparison table, before anything else.
  CHECK(md.find("| α | linear |") < md.find("## Routing consistency"));
  CHECK(contains(md, "| group | MoE layer | CLS corr. | CLS non-corr. | CLS gap |"));
  // Alpha 0, layer 0, seeds 0..2 (all done): corr 1.2, 1.3, 1.4; non 0.9, 0.95, 1.0.
  std::vector<double> corr, non, gap;
  for (int seed = 0; seed < 3; ++seed) {
    corr.push_back(kCorr0 + 0.1 * seed);
    non.push_back(kNon0 + 0.05 * seed);
    gap.push_back(corr.back() - non.back());
  }
  const auto row = md_row(md, "| α=0.0 | 0 |");
  REQUIRE(row.size() == 8);
  CHECK(row[2] == fmt("%.2f ± %.3f", mean_of(corr), sample_std(corr)));
  CHECK(row[3] == fmt("%.2f ± %.3f", mean_of(non), sample_std(non)));
  // The std of the gaps, not a combination of the two stds.
  CHECK(row[4] == fmt("%.2f ± %.3f", mean_of(gap), sample_std(gap)));
  // Alpha 0.3: seeds 0 and 1 are done, seed 2 failed and does not count.
  const auto row3 = md_row(md, "| α=0.3 | 0 |");
  const std::vector<double> gap3 = {kCorr0 + 0.3 - kNon0, kCorr0 + 0.3 + 0.1 - kNon0 - 0.05};
  CHECK(row3[4] == fmt("%.2f ± %.3f", mean_of(gap3), sample_std(gap3)));
  const std::string html = slurp(dir / "report" / "index.html");
  CHECK(contains(html, "<h2>Routing consistency per MoE layer (CR-MoE Fig. 3)</h2>"));
}

TEST_CASE("report: no bold where nothing is compared or nothing is better") {
  CHECK(wb::ranked_metric("linear_probe/top1"));
  CHECK(wb::ranked_metric("linear_probe/top1_view1"));
  CHECK(wb::ranked_metric("knn/loss"));
  CHECK_FALSE(wb::ranked_metric("linear_probe/lr"));
  CHECK_FALSE(wb::ranked_metric("linear_probe/lr_at_edge"));
  CHECK_FALSE(wb::ranked_metric("semi_supervised/lr_view1"));
  CHECK_FALSE(wb::ranked_metric("semi_supervised/labelled"));
  CHECK_FALSE(wb::ranked_metric("few_shot/4shot_std"));
  CHECK(wb::ranked_metric("few_shot/4shot_mean"));
  CHECK_FALSE(wb::ranked_metric("routing_consistency/cls_noncorresponding_mean"));
  CHECK_FALSE(wb::ranked_metric("routing_consistency/moe_layers"));

  Sweep sweep;
  // Experiment B with one group only: a one-row table has no best cell.
  const fs::path dir = sweep.runs / "toy_b";
  wb::ReportOptions options;
  options.plots = false;
  wb::write_report({dir}, options);
  std::string md = slurp(dir / "report" / "report.md");
  CHECK(contains(md, "**"));  // two rows (k = 1, 2) with different top-1: the best is bold
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_directory() && fs::exists(entry.path() / "point.toml") &&
        contains(slurp(entry.path() / "point.toml"), "[\"gate.k\", \"2\"]"))
      fs::remove_all(entry.path());
  wb::write_report({dir}, options);
  md = slurp(dir / "report" / "report.md");
  CHECK_FALSE(contains(md, "**"));
  CHECK_FALSE(contains(md, "Bold:"));
  CHECK_FALSE(contains(slurp(dir / "report" / "index.html"), "<b>"));
}

TEST_CASE("report: baseline differences, columns nobody measured, unreadable points") {
  Sweep sweep;
  const fs::path dir = sweep.runs / "toy_a";
  std::string text = slurp(dir / "experiment.toml");
  text += "baseline = { losses.ogar.alpha = 0.0 }\n";
  const std::string last = "\"linear_probe/top5\"]";
  text.replace(text.find(last), last.size(), "\"linear_probe/top5\", \"knn/top9\"]");
  std::ofstream(dir / "experiment.toml") << text;
  // A point directory of the current file whose point.toml is garbage: listed, not grouped.
  fs::create_directories(dir / "badpoint");
  std::ofstream(dir / "badpoint" / "point.toml") << "this is = = not toml\n";
  std::string ids = slurp(dir / "points.toml");
  ids.insert(ids.rfind(']'), "  \"badpoint\",\n");
  std::ofstream(dir / "points.toml") << ids;

  wb::ReportOptions options;
  options.plots = false;
  options.out = sweep.tmp.path() / "elsewhere";
  const wb::ReportResult result = wb::write_report({dir}, options);
  CHECK(fs::exists(sweep.tmp.path() / "elsewhere" / "report.md"));
  REQUIRE(result.warnings.size() == 1);
  CHECK(contains(result.warnings[0], "'knn/top9'"));
  const std::string md = slurp(sweep.tmp.path() / "elsewhere" / "report.md");
  const auto row3 = md_row(md, "| 0.3 |");
  const double delta = mean_of(kTop1.at(0.3)) - mean_of(kTop1.at(0.0));
  CHECK(contains(row3[1], fmt("(+%.1f)", delta)));
  CHECK(row3[4] == "—");  // knn/top9
  CHECK(contains(md, "badpoint"));
  CHECK(contains(md, "7 points in 2 configurations; 5 done, 2 failed"));
  const auto csv = csv_records(sweep.tmp.path() / "elsewhere" / "report.csv");
  REQUIRE(csv.size() == 2);
  CHECK(csv[0].at("baseline") == "1");
  CHECK(csv[1].at("baseline") == "0");
  CHECK(number(csv[1].at("linear_probe/top1.delta")) == doctest::Approx(delta));
  CHECK(csv[0].at("linear_probe/top1.delta").empty());
}

TEST_CASE("report of an edited experiment: points the file no longer defines are left out") {
  Sweep sweep;
  const fs::path dir = sweep.runs / "toy_a";
  // The grid loses alpha = 0.3 and the file is run again: its three points stay on disk.
  std::string text = kExperimentA;
  const std::string grid = "losses.ogar.alpha = [0.0, 0.3]";
  REQUIRE(text.find(grid) != std::string::npos);
  text.replace(text.find(grid), grid.size(), "losses.ogar.alpha = [0.0]");
  const wb::Experiment edited = sweep.parse(text);
  REQUIRE(edited.points.size() == 3);
  wb::write_experiment_copy(sweep.runs, edited);
  std::vector<std::string> old_ids;
  for (const auto& e : fs::directory_iterator(dir))
    if (fs::exists(e.path() / "point.toml") &&
        std::none_of(edited.points.begin(), edited.points.end(),
                     [&](const wb::Point& p) { return p.id == e.path().filename().string(); }))
      old_ids.push_back(e.path().filename().string());
  REQUIRE(old_ids.size() == 3);

  wb::ReportOptions options;
  options.plots = false;
  const wb::ReportResult result = wb::write_report({dir}, options);
  REQUIRE(result.warnings.size() == 1);
  CHECK(contains(result.warnings[0], "3 point directories left out"));
  for (const auto& id : old_ids) CHECK(contains(result.warnings[0], id));
  const std::string md = slurp(dir / "report" / "report.md");
  CHECK(contains(md, "3 points in 1 configuration;"));
  CHECK_FALSE(contains(md, "| 0.3 |"));
  CHECK_FALSE(contains(md, sweep.failed_id + "`"));  // the failed point was an alpha = 0.3 one

  // Without points.toml (runs made before it existed) every directory counts, as before.
  fs::remove(dir / "points.toml");
  const wb::ReportResult all = wb::write_report({dir}, options);
  CHECK(all.warnings.empty());
  CHECK(contains(slurp(dir / "report" / "report.md"), "6 points in 2 configurations"));
}

TEST_CASE("report comparing two experiments: experiment column, union of columns") {
  Sweep sweep;
  wb::ReportOptions options;
  options.plots = false;
  const wb::ReportResult result =
      wb::write_report({sweep.runs / "toy_a/", sweep.runs / "toy_b"}, options);
  CHECK(result.dir == fs::absolute(sweep.runs / "compare-toy_a-toy_b"));
  const auto csv = csv_records(result.dir / "report.csv");
  REQUIRE(csv.size() == 4);
  CHECK(csv[0].at("experiment") == "toy_a");
  CHECK(csv[2].at("experiment") == "toy_b");
  // Key columns: alpha (varied in A) and gate.k (varied in B); B's alpha comes from its
  // resolved configuration, A has no gate.
  CHECK(csv[2].at("losses.ogar.alpha") == "0.5");
  CHECK(csv[2].at("gate.k") == "1");
  CHECK(csv[3].at("gate.k") == "2");
  CHECK(csv[0].at("gate.k").empty());
  // Columns: A's [report] columns (the union of the experiments' chosen columns).
  CHECK(csv[0].count("linear_probe/top1.mean") == 1);
  CHECK(csv[0].count("knn/top1.mean") == 0);
  // The best top-1 over all rows is B with k = 1 (80).
  CHECK(csv[2].at("linear_probe/top1.best") == "1");
  CHECK(csv[1].at("linear_probe/top1.best") == "0");
  CHECK(number(csv[2].at("linear_probe/top1.mean")) == 80.0);
  CHECK(csv[2].at("linear_probe/top1.n") == "1");
  CHECK(csv[2].at("linear_probe/top1.std").empty());

  const std::string md = slurp(result.dir / "report.md");
  CHECK(contains(md, "| experiment | α | gate.k | linear |"));
  CHECK(contains(md, "## toy_a"));
  CHECK(contains(md, "## toy_b"));
  const std::string html = slurp(result.dir / "index.html");
  CHECK(contains(html, "<h2>All experiments</h2>"));
  CHECK(contains(html, "<h2>toy_a</h2>"));
  CHECK(contains(html, "<h2>toy_b</h2>"));
  CHECK(contains(html, "exited with code 3"));

  // Each experiment's own table keeps its own columns: B shows every metric it has.
  const auto b = md.substr(md.find("## toy_b"));
  CHECK(contains(b, "| gate.k | knn/top1 | linear_probe/top1 | seeds | time |"));
}

TEST_CASE("report errors: not an experiment directory, plots without gnuplot") {
  Sweep sweep;
  CHECK_THROWS_WITH_AS(wb::write_report({sweep.tmp.path()}), doctest::Contains("no points found"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(wb::write_report({sweep.tmp.path() / "nope"}),
                       doctest::Contains("not a directory"), std::runtime_error);

  wb::ReportOptions options;
  options.gnuplot = (sweep.tmp.path() / "no-such-gnuplot").string();
  const wb::ReportResult result = wb::write_report({sweep.runs / "toy_a"}, options);
  CHECK(contains(result.plot_error, "gnuplot not found"));
  CHECK(result.plots == 0);
  const fs::path out = sweep.runs / "toy_a" / "report";
  CHECK(fs::file_size(out / "report.md") > 0);
  CHECK(fs::file_size(out / "report.csv") > 0);
  CHECK(contains(slurp(out / "index.html"), "gnuplot not found"));
}

TEST_CASE("report plots: gnuplot draws every figure as a PNG the page links") {
  // gnuplot-nox is one of the project's setup packages: its absence is a failure here.
  REQUIRE_MESSAGE(!wb::find_executable("gnuplot").empty(),
                  "gnuplot is not installed (Debian: apt-get install gnuplot-nox)");
  Sweep sweep;
  const fs::path dir = sweep.runs / "toy_a";
  const wb::ReportResult result = wb::write_report({dir});
  INFO("warnings: ", result.warnings.size() ? result.warnings[0] : "");
  CHECK(result.plot_error.empty());
  CHECK(result.plot_failures == 0);
  CHECK(result.warnings.empty());
  const fs::path plots = dir / "report" / "plots";
  std::set<std::string> pngs;
  for (const auto& entry : fs::directory_iterator(plots))
    if (entry.path().extension() == ".png") {
      pngs.insert(entry.path().filename().string());
      CHECK_MESSAGE(is_png(entry.path()), entry.path());
    }
  // (a) each metric column against alpha, except top-5 (measured for one alpha only); (b)
  // train/loss and the loss term; (c) entropy of the two MoE layers and one load map per
  // group; (d) Fig. 3.
  const std::set<std::string> expected = {"metric_linear_probe_top1_vs_losses_ogar_alpha.png",
                                          "metric_knn_loss_vs_losses_ogar_alpha.png",
                                          "curve_train_loss.png",
                                          "curve_loss_ogar_gate.png",
                                          "routing_entropy_moe1.png",
                                          "routing_entropy_moe3.png",
                                          "routing_load____0_0.png",
                                          "routing_load____0_3.png",
                                          "routing_consistency.png"};
  std::string listed;
  for (const auto& p : pngs) listed += p + " ";
  INFO("plots: ", listed);
  CHECK(pngs == expected);
  CHECK(result.plots == expected.size());
  // Every plot keeps its data and script next to it.
  CHECK(fs::file_size(plots / "routing_consistency.dat") > 0);
  CHECK(contains(slurp(plots / "routing_consistency.gp"), "CLS tokens"));
  CHECK(contains(slurp(plots / "metric_linear_probe_top1_vs_losses_ogar_alpha.gp"),
                 "set xlabel 'α'"));

  // The order a reader needs: metrics against the key, Fig. 3, training curves; per-layer
  // routing plots and evaluator images folded.
  const std::string page = slurp(dir / "report" / "index.html");
  const auto metrics_at = page.find("<h2>Metrics against hyper-parameters</h2>");
  const auto fig3_at = page.find("<h2>Routing consistency per MoE layer (CR-MoE Fig. 3)</h2>");
  const auto curves_at = page.find("<h2>Training curves</h2>");
  REQUIRE(metrics_at != std::string::npos);
  REQUIRE(fig3_at != std::string::npos);
  REQUIRE(curves_at != std::string::npos);
  CHECK(metrics_at < fig3_at);
  CHECK(fig3_at < curves_at);
  CHECK(contains(page, "<details>\n<summary>Routing: load entropy of each MoE layer (2 figures)"));
  CHECK(contains(page, "<details>\n<summary>Routing: final expert load (2 figures)"));
  CHECK(
      contains(page, "<details>\n<summary>Evaluator images (first seed of each group) (1 figure)"));
  // report.md shows the same figures, linked relatively.
  CHECK(contains(slurp(dir / "report" / "report.md"), "](plots/routing_consistency.png)"));

  // Every image the page shows exists (plots, and the evaluator PNG).
  const std::string html = slurp(dir / "report" / "index.html");
  std::size_t count = 0;
  for (std::size_t at = html.find("<img src=\""); at != std::string::npos;
       at = html.find("<img src=\"", at + 1)) {
    const std::size_t start = at + 10;
    std::string src = html.substr(start, html.find('"', start) - start);
    for (std::size_t p = src.find("%20"); p != std::string::npos; p = src.find("%20"))
      src.replace(p, 3, " ");
    CHECK_MESSAGE(fs::exists(dir / "report" / src), src);
    ++count;
  }
  CHECK(count == expected.size() + 1);

  // A second report replaces the plots (no stale files) and the comparison gets its own.
  const wb::ReportResult again = wb::write_report({dir});
  CHECK(again.plots == expected.size());
  const wb::ReportResult both = wb::write_report({dir, sweep.runs / "toy_b"});
  CHECK(both.plot_failures == 0);
  CHECK(is_png(both.dir / "plots" / "all" / "all_curve_train_loss.png"));
  CHECK(is_png(both.dir / "plots" / "all" / "all_routing_consistency.png"));
  CHECK(is_png(both.dir / "plots" / "toy_b" / "curve_train_loss.png"));
}

TEST_CASE("format_number: what logs print, rounded to its precision") {
  CHECK(wb::format_number(100.0 * 1803 / 2500) == "72.12");
  CHECK(wb::format_number(72.11999999999999) == "72.12");
  CHECK(wb::format_number(0.0025) == "0.0025");
  CHECK(wb::format_number(3.0) == "3");
  CHECK(wb::format_number(30.0) == "30");
  CHECK(wb::format_number(12345.6) == "12346");
  CHECK(wb::format_number(99.996) == "100");
  CHECK(wb::format_number(-0.5) == "-0.5");
  CHECK(wb::format_number(0.0) == "0");
  CHECK(wb::format_number(1.5e-7) == "1.500e-07");
  CHECK(wb::format_number(1.23456, 3) == "1.23");
  CHECK(wb::format_number(NAN) == "nan");
}
