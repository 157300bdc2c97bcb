// Settings with one owner: the typed settings built once from a validated configuration, the
// momentum m0 and temperature tau that MoCo and OGAR share as core keys of [train], the moved
// keys of those plugins (refused in experiment files with a message naming the new key,
// migrated in the config.toml of older run directories), and the checkpoint module names.
#include <doctest/doctest.h>

#include <ATen/ATen.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <tuple>
#include <utility>

#include "built_plugins.h"
#include "config/experiment.h"
#include "config/run_config.h"
#include "dist/communicator.h"
#include "fixture_temp_dir.h"
#include "train/checkpoint.h"
#include "train/model.h"

namespace fs = std::filesystem;

namespace {

using wb_test::plugins;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A CR-MoE configuration with the real plugins; `extra` goes into the moco and ogar tables.
std::string crmoe(const std::string& moco_extra = "", const std::string& ogar_extra = "",
                  const std::string& train = "") {
  return "backbone = { plugin = \"vit\", dim = 8, depth = 2, heads = 2, patch = 4, experts = 4, "
         "moe_every = 2 }\n"
         "gate = \"noisy_topk\"\n"
         "[[losses]]\nplugin = \"moco\"\nhidden = 6\nout = 4\n" +
         moco_extra + "\n[[losses]]\nplugin = \"ogar\"\n" + ogar_extra + "\n[train]\nbatch = 4\n" +
         train;
}

using wbtest::TempDir;

}  // namespace

TEST_CASE("settings: built once from the validated tables, equal to them") {
  const wb::RunConfig c = wb::parse_run_config(
      crmoe("", "", "epochs = 3\nlr_scaling = \"none\"\nbetas = [0.8, 0.9]\n") +
          "[data]\ntrain_limit = 100\nclasses = [1, 3]\n[datasets.other]\ndataset = \"cifar10\"\n",
      "cfg.toml", plugins());
  const wb::Settings& s = c.settings;
  CHECK(s.run.seed == static_cast<std::uint64_t>(c.run.integer("seed")));
  CHECK(s.run.device == c.run.text("device"));
  CHECK(s.run.workers == c.run.integer("workers"));
  CHECK(s.train.epochs == 3.0);
  CHECK(s.train.batch == 4);
  CHECK(s.train.base_lr == c.train.real("base_lr"));
  CHECK_FALSE(s.train.linear_lr_scaling);
  CHECK(s.train.beta1 == 0.8);
  CHECK(s.train.beta2 == 0.9);
  CHECK(s.train.checkpoint_every == c.train.integer("checkpoint_every"));
  CHECK(s.data.dataset == "fashion_mnist");
  CHECK(s.data.train_limit == 100);
  CHECK(s.data.classes == std::vector<std::int64_t>{1, 3});
  CHECK(s.data.label_fraction == 1.0);
  REQUIRE(s.datasets.count("other") == 1);
  CHECK(s.datasets.at("other").dataset == "cifar10");
  CHECK(s.views.recipe == "auto");
  // The values MoCo v3 and CR-MoE use, now core keys of [train]: m0 0.99, tau 0.2.
  CHECK(s.train.momentum == 0.99);
  CHECK(s.train.temperature == 0.2);
}

TEST_CASE("one temperature: the losses get train.temperature, no plugin declares its own") {
  const wb::RunConfig c = wb::parse_run_config(crmoe("", "", "temperature = 0.5\nmomentum = 0.9\n"),
                                               "cfg.toml", plugins());
  CHECK(c.settings.train.temperature == 0.5);
  CHECK(c.settings.train.momentum == 0.9);
  for (const auto& loss : c.losses) {
    CHECK_FALSE(loss.params.has("tau"));
    CHECK_FALSE(loss.params.has("momentum"));
  }
  auto comm = wb::make_single_process_communicator();
  const wb::Model model = wb::build_model(c, plugins(), wb::DataShape{1, 8, 10}, comm.get());
  CHECK(model.needs.momentum_encoder);
  CHECK(model.momentum != nullptr);
}

TEST_CASE("moved keys: an experiment file that sets moco's or ogar's tau or momentum is refused") {
  const std::string file = "exp.toml";
  for (const auto& [table, key, target] :
       {std::tuple<std::string, std::string, std::string>{"moco", "tau", "train.temperature"},
        {"moco", "momentum", "train.momentum"},
        {"ogar", "tau", "train.temperature"},
        {"ogar", "momentum", "train.momentum"}}) {
    CAPTURE(table);
    CAPTURE(key);
    const std::string setting = key + " = 0.3\n";
    const std::string base = crmoe(table == "moco" ? setting : "", table == "ogar" ? setting : "");
    std::string text = "[experiment]\nname = \"x\"\n[base]\n";
    // The [[losses]] and [train] tables of the base, as [[base.losses]] / [base.train].
    std::string body = base;
    for (const auto& [from, to] :
         {std::pair<std::string, std::string>{"[[losses]]", "[[base.losses]]"},
          {"[train]", "[base.train]"}}) {
      for (std::size_t at = body.find(from); at != std::string::npos; at = body.find(from, at + 1))
        body.replace(at, from.size(), to);
    }
    text += body;
    try {
      wb::parse_experiment(text, file, plugins());
      FAIL("the moved key was accepted");
    } catch (const wb::ConfigError& e) {
      const std::size_t line_at = text.find(setting);
      const int line = 1 + static_cast<int>(std::count(text.begin(), text.begin() + line_at, '\n'));
      CHECK(e.file == file);
      CHECK(e.line == line);
      CHECK(e.column == 1);
      CHECK(contains(e.message, "losses." + table + "." + key + " has moved to " + target));
    }
  }
  // Through --set and the grid too: the message names the new key.
  const std::string plain =
      "[experiment]\nname = \"x\"\n[base]\nbackbone = \"vit\"\n"
      "losses = [{ plugin = \"moco\" }]\n";
  try {
    wb::parse_experiment(plain, file, plugins(), {{"losses.moco.tau=0.1"}, ""});
    FAIL("the moved key was accepted");
  } catch (const wb::ConfigError& e) {
    CHECK(contains(e.what(), "--set losses.moco.tau=0.1"));
    CHECK(contains(e.message, "moved to train.temperature"));
  }
}

TEST_CASE("moved keys: an older run directory's config.toml is migrated, or refused on conflict") {
  TempDir dir("settings");
  // What the previous version wrote: tau and momentum in both loss tables, none in [train].
  const std::string old = crmoe("tau = 0.3\nmomentum = 0.97\n", "tau = 0.3\nmomentum = 0.97\n");
  const wb::RunConfig c = wb::load_run_config(dir.write("config.toml", old), plugins());
  CHECK(c.settings.train.temperature == 0.3);
  CHECK(c.settings.train.momentum == 0.97);
  REQUIRE(c.migrated.size() == 2);
  CHECK(contains(c.migrated[0], "config.toml"));
  CHECK(contains(c.migrated[0] + c.migrated[1],
                 "losses.moco.tau and losses.ogar.tau moved to train.temperature = 0.3"));
  CHECK(contains(c.migrated[0] + c.migrated[1],
                 "losses.moco.momentum and losses.ogar.momentum moved to train.momentum = 0.97"));
  // The canonical text is the new layout: it loads again without notes, to the same id.
  const wb::RunConfig again = wb::load_run_config(dir.write("new.toml", c.toml), plugins());
  CHECK(again.migrated.empty());
  CHECK(again.id == c.id);
  CHECK(c.id == wb::parse_run_config(crmoe("", "", "temperature = 0.3\nmomentum = 0.97\n"),
                                     "cfg.toml", plugins())
                    .id);

  // Two different temperatures cannot become one: refused at the second value.
  const std::string conflict = crmoe("tau = 0.2\n", "tau = 0.1\n");
  try {
    wb::load_run_config(dir.write("conflict.toml", conflict), plugins());
    FAIL("two different temperatures were merged");
  } catch (const wb::ConfigError& e) {
    CHECK(e.line ==
          1 + static_cast<int>(std::count(conflict.begin(),
                                          conflict.begin() + conflict.find("tau = 0.1"), '\n')));
    CHECK(contains(e.message, "losses.ogar.tau = 0.1 and losses.moco.tau = 0.2 differ"));
    CHECK(contains(e.message, "train.temperature"));
  }
}

TEST_CASE("checkpoint_state: the module names a checkpoint holds, and a round trip") {
  const wb::RunConfig c = wb::parse_run_config(crmoe(), "cfg.toml", plugins());
  auto comm = wb::make_single_process_communicator();
  at::manual_seed(1);
  wb::Model a = wb::build_model(c, plugins(), wb::DataShape{1, 8, 10}, comm.get());
  at::manual_seed(2);
  wb::Model b = wb::build_model(c, plugins(), wb::DataShape{1, 8, 10}, comm.get());
  wb::CheckpointState sa = wb::checkpoint_state(a);
  std::vector<std::string> modules;
  for (const auto& [name, m] : sa.modules) modules.push_back(name);
  CHECK(modules == std::vector<std::string>{"backbone", "loss0_moco", "loss1_ogar", "momentum"});
  TempDir dir("settings");
  sa.step = 7;
  wb::save_checkpoint(dir.path() / "last.pt", sa);
  wb::CheckpointState sb = wb::checkpoint_state(b);
  CHECK(wb::load_checkpoint(dir.path() / "last.pt", sb) == 7);
  for (const auto& item : a.backbone->named_parameters())
    CHECK(at::equal(item.value(), *b.backbone->named_parameters().find(item.key())));
  for (const auto& item : a.losses[0]->named_parameters())
    CHECK(at::equal(item.value(), *b.losses[0]->named_parameters().find(item.key())));
}
