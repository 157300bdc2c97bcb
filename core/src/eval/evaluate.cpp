#include "eval/evaluate.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>
#include <stdexcept>

#include "eval/context.h"
#include "h5/metrics.h"
#include "store/run_dir.h"
#include "workbench/evaluator.h"
#include "workbench/format.h"
#include "workbench/registry.h"
#include "workbench/stop.h"

namespace wb {

namespace {

void record(MetricsFile& metrics, spdlog::logger& log, const std::string& name,
            const EvalResult& result) {
  for (const auto& [metric, value] : result.scalars) {
    metrics.eval_scalar(name, metric, value);
    log.info("  {}/{} = {}", name, metric, format_number(value));
  }
  for (const auto& [metric, tensor] : result.arrays) {
    const at::Tensor t = tensor.detach().to(at::kCPU, at::kDouble).contiguous();
    std::vector<double> values(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
    std::vector<std::int64_t> shape(t.sizes().begin(), t.sizes().end());
    metrics.eval_array(name, metric, values, shape);
  }
  metrics.flush();  // each evaluator's results survive a crash of the next one
}

}  // namespace

std::vector<std::string> evaluate_point(const Evaluation& run, Model& model, c10::Device device) {
  const RunConfig& config = *run.config;
  spdlog::logger& log = *run.log;
  const auto names = evaluator_names(config);
  for (const auto& wanted : run.only)
    if (std::find(names.begin(), names.end(), wanted) == names.end()) {
      std::string known;
      for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
      throw std::runtime_error("no evaluator named '" + wanted + "' in the run's configuration (" +
                               (known.empty() ? "it has none" : "it has " + known) + ")");
    }
  std::vector<std::string> ran;
  if (config.evaluators.empty()) return ran;
  run.metrics->flush();
  std::set<std::string> done;
  for (const auto& [evaluator, metrics] : MetricsReader(run.metrics->path()).eval())
    done.insert(evaluator);
  RunEvalContext eval(config, *run.registry, model, device, run.threads, run.dir / "eval", log,
                      run.cache_tag);
  model.train(false);
  std::vector<std::string> failures;
  for (std::size_t i = 0; i < config.evaluators.size(); ++i) {
    const std::string& name = names[i];
    if (!run.only.empty() && std::find(run.only.begin(), run.only.end(), name) == run.only.end())
      continue;
    if (done.count(name) && !run.force) {
      log.info("evaluator {} already done", name);
      continue;
    }
    const auto& e = config.evaluators[i];
    throw_if_stop_requested("before evaluator " + name);
    log.info("evaluating: {}", name);
    try {
      auto evaluator = run.registry->make_evaluator(e.plugin, e.params);
      record(*run.metrics, log, name, evaluator->evaluate(eval));
    } catch (const Interrupted&) {
      throw;  // a stop request ends the evaluation, it is no evaluator's failure
    } catch (const std::exception& ex) {
      if (!run.keep_going) throw;
      log.error("evaluator {} failed: {}", name, ex.what());
      failures.push_back(name + ": " + ex.what());
      continue;
    }
    ran.push_back(name);
    if (run.on_done) run.on_done(name);
  }
  if (!failures.empty()) {
    std::string text = std::to_string(failures.size()) + " evaluator(s) failed:";
    for (const auto& f : failures) text += "\n  " + f;
    throw std::runtime_error(text);
  }
  return ran;
}

}  // namespace wb
