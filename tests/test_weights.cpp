// Weights leaving and entering the workbench (core/src/weights): the safetensors and torch.save
// formats byte by byte and read back, the timm name table on real ViT / V-MoE backbones, and
// [init]: a backbone started from timm-named files or another run's checkpoint, with missing,
// unexpected and mis-shaped weights refused. Python's side is tests/python/test_export.py.
#include <doctest/doctest.h>

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <set>

#include "built_plugins.h"
#include "config/run_config.h"
#include "store/atomic_file.h"
#include "test_data_helpers.h"
#include "train/checkpoint.h"
#include "train/model.h"
#include "train/trainer.h"
#include "weights/init.h"
#include "weights/json.h"
#include "weights/safetensors.h"
#include "weights/timm_names.h"
#include "weights/torch_file.h"
#include "workbench/backbone.h"

namespace fs = std::filesystem;
using wb_test::plugins;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// A tiny ViT on 1 x 8 x 8 images: 4 x 4 patches, width 8, 2 heads; MoE in block 1 when
// experts > 0.
std::shared_ptr<wb::Backbone> vit(std::int64_t depth, std::int64_t experts, std::uint64_t seed,
                                  const std::string& gate = "noisy_topk") {
  at::manual_seed(seed);
  wb::Params p = plugins().defaults(wb::Kind::Backbone, "vit");
  p.set("dim", std::int64_t{8});
  p.set("depth", depth);
  p.set("heads", std::int64_t{2});
  p.set("patch", std::int64_t{4});
  if (experts > 0) {
    p.set("experts", experts);
    p.set("moe_blocks", std::vector<std::int64_t>{1});
  }
  wb::Params gp = plugins().defaults(wb::Kind::Gate, gate);
  wb::BackboneContext context;
  context.channels = 1;
  context.image_size = 8;
  const at::Tensor centroids = gate == "cluster" ? at::randn({3, 8}) : at::Tensor();
  context.make_gate = [gate, gp, centroids](const wb::GateShape& s) {
    wb::GateShape shape = s;
    shape.centroids = centroids;
    return plugins().make_gate(gate, gp, shape);
  };
  return plugins().make_backbone("vit", p, context);
}

at::Tensor cls(wb::Backbone& b, const at::Tensor& images) {
  at::NoGradGuard no_grad;
  b.eval();
  wb::RoutingContext rc;
  rc.training = false;
  rc.view = at::zeros({images.size(0)}, at::kLong);
  return b.forward(images, rc).cls;
}

bool same_weights(const torch::nn::Module& a, const torch::nn::Module& b) {
  const wb::StateDict x = wb::module_state(a), y = wb::module_state(b);
  if (x.size() != y.size()) return false;
  for (std::size_t i = 0; i < x.size(); ++i)
    if (x[i].first != y[i].first || !at::equal(x[i].second, y[i].second)) return false;
  return true;
}

std::uint64_t le64(const std::string& s) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | static_cast<unsigned char>(s[static_cast<std::size_t>(i)]);
  return v;
}

}  // namespace

TEST_CASE("safetensors: length-prefixed JSON header, aligned raw little-endian data, round trip") {
  wbtest::TempDir dir;
  const fs::path file = dir.path() / "t.safetensors";
  const at::Tensor a = at::arange(6, at::kFloat).view({2, 3});
  const at::Tensor b = at::tensor({std::int64_t{7}, std::int64_t{-1}});
  wb::save_safetensors(file, {{"a", a}, {"b.c", b.t()}}, {{"naming", "timm"}});

  const std::string bytes = wb::read_file(file);
  const std::uint64_t n = le64(bytes);
  CHECK(n % 8 == 0);
  REQUIRE(bytes.size() == 8 + n + 6 * 4 + 2 * 8);
  const wb::json::Value header = wb::json::parse(bytes.substr(8, n), "header");
  REQUIRE(header.find("a"));
  CHECK(header.find("a")->find("dtype")->text == "F32");
  CHECK(wb::json::dump(*header.find("a")->find("shape")) == "[2,3]");
  CHECK(wb::json::dump(*header.find("a")->find("data_offsets")) == "[0,24]");
  CHECK(header.find("b.c")->find("dtype")->text == "I64");
  CHECK(wb::json::dump(*header.find("b.c")->find("data_offsets")) == "[24,40]");
  CHECK(header.find("__metadata__")->find("naming")->text == "timm");
  float second = 0;
  std::memcpy(&second, bytes.data() + 8 + n + 4, 4);
  CHECK(second == 1.0f);
  std::int64_t minus_one = 0;
  std::memcpy(&minus_one, bytes.data() + 8 + n + 32, 8);
  CHECK(minus_one == -1);

  std::map<std::string, std::string> meta;
  const wb::StateDict back = wb::load_safetensors(file, &meta);
  REQUIRE(back.size() == 2);
  CHECK(back[0].first == "a");
  CHECK(at::equal(back[0].second, a));
  CHECK((back[1].second.scalar_type() == at::kLong));
  CHECK(at::equal(back[1].second, b));
  CHECK(meta.at("naming") == "timm");

  // A truncated file is refused, naming the file.
  std::ofstream(dir.path() / "cut.safetensors", std::ios::binary)
      << bytes.substr(0, bytes.size() - 3);
  const std::string error = error_of([&] { wb::load_safetensors(dir.path() / "cut.safetensors"); });
  CHECK(contains(error, "cut.safetensors"));
  CHECK(contains(error, "truncated"));
}

TEST_CASE("torch.save format: a zip with data.pkl of a plain dict and data/<key> records") {
  wbtest::TempDir dir;
  const fs::path file = dir.path() / "w.pt";
  const at::Tensor a = at::randn({3, 4});
  const at::Tensor flags = at::tensor({1, 0, 1}).to(at::kBool);
  const at::Tensor big = at::arange(70000, at::kLong);  // sizes that need BININT, LONG1-free
  wb::save_torch_file(file, {{"a.weight", a.t()}, {"flags", flags}, {"big", big}});
  CHECK(wb::is_zip_file(file));

  caffe2::serialize::PyTorchStreamReader reader(file.string());
  CHECK(reader.hasRecord("data.pkl"));
  CHECK(reader.hasRecord("version"));
  CHECK(reader.hasRecord("byteorder"));
  for (const char* r : {"data/0", "data/1", "data/2"}) CHECK(reader.hasRecord(r));
  auto [pkl, size] = reader.getRecord("data.pkl");
  const std::string pickle(static_cast<const char*>(pkl.get()), size);
  CHECK(pickle.substr(0, 3) == std::string("\x80\x02}", 3));  // protocol 2, a plain dict
  CHECK(contains(pickle, "torch._utils\n_rebuild_tensor_v2\n"));
  CHECK(contains(pickle, "torch\nFloatStorage\n"));
  CHECK(contains(pickle, "torch\nBoolStorage\n"));
  CHECK(pickle.back() == '.');
  auto [data0, size0] = reader.getRecord("data/0");
  CHECK(size0 == 12 * 4);  // the transposed tensor is written contiguous
  float first_row[3];      // row 0 of a.t() is column 0 of a
  std::memcpy(first_row, data0.get(), sizeof first_row);
  for (int j = 0; j < 3; ++j) CHECK(first_row[j] == a[j][0].item<float>());

  const wb::StateDict back = wb::load_torch_file(file);
  REQUIRE(back.size() == 3);
  CHECK(back[0].first == "a.weight");
  CHECK(at::equal(back[0].second, a.t()));
  CHECK(at::equal(back[1].second, flags));
  CHECK(at::equal(back[2].second, big));
  CHECK(at::equal(wb::load_state_dict(file)[0].second, a.t()));  // told apart by its bytes
}

TEST_CASE("timm names: the ViT's weights map one to one, MoE experts transposed, and back") {
  const wb::StateDict dense = wb::module_state(*vit(1, 0, 0));
  REQUIRE(wb::has_timm_layout(dense));
  std::set<std::string> names;
  for (const auto& [name, t] : wb::to_timm(dense)) names.insert(name);
  CHECK(names == std::set<std::string>{
                     "cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
                     "blocks.0.norm1.weight", "blocks.0.norm1.bias", "blocks.0.attn.qkv.weight",
                     "blocks.0.attn.qkv.bias", "blocks.0.attn.proj.weight",
                     "blocks.0.attn.proj.bias", "blocks.0.norm2.weight", "blocks.0.norm2.bias",
                     "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc1.bias", "blocks.0.mlp.fc2.weight",
                     "blocks.0.mlp.fc2.bias", "norm.weight", "norm.bias"});

  for (const char* gate : {"noisy_topk", "cluster"}) {
    CAPTURE(gate);
    const wb::StateDict moe = wb::module_state(*vit(2, 4, 0, gate));
    REQUIRE(wb::has_timm_layout(moe));
    const wb::StateDict timm = wb::to_timm(moe);
    std::set<std::string> seen;
    for (std::size_t i = 0; i < moe.size(); ++i) {
      CHECK(seen.insert(timm[i].first).second);  // no two weights share a name
      const auto back = wb::workbench_name(timm[i].first);
      REQUIRE(back);
      CHECK(back->name == moe[i].first);
    }
    const at::Tensor* w1 = wb::find_tensor(moe, "block1.moe.w1");
    const at::Tensor* fc1 = wb::find_tensor(timm, "blocks.1.mlp.experts.fc1.weight");
    REQUIRE((w1 && fc1));
    CHECK(w1->sizes().vec() == std::vector<std::int64_t>{4, 8, 16});   // [E, D, H]
    CHECK(fc1->sizes().vec() == std::vector<std::int64_t>{4, 16, 8});  // nn.Linear's [E, H, D]
    CHECK(at::equal(fc1->transpose(1, 2), *w1));
    CHECK(wb::find_tensor(timm, "blocks.1.mlp.experts.fc2.weight")->sizes().vec() ==
          std::vector<std::int64_t>{4, 8, 16});
    CHECK(wb::find_tensor(timm, "blocks.1.mlp.gate.weight"));
  }
  CHECK(wb::timm_name("block12.attn.qkv.bias")->name == "blocks.12.attn.qkv.bias");
  CHECK_FALSE(wb::timm_name("block01.norm1.weight"));
  CHECK_FALSE(wb::workbench_name("head.weight"));
  CHECK_FALSE(wb::has_timm_layout({{"encoder.layer.0", at::zeros({1})}}));
}

TEST_CASE("init: a ViT starts from timm-named files and then computes what the source did") {
  wbtest::TempDir dir;
  for (const std::int64_t experts : {std::int64_t{0}, std::int64_t{4}}) {
    CAPTURE(experts);
    auto source = vit(2, experts, 1);
    auto target = vit(2, experts, 2);
    REQUIRE_FALSE(same_weights(*source, *target));
    const wb::StateDict timm = wb::to_timm(wb::module_state(*source));
    const fs::path st = dir.path() / "w.safetensors", pt = dir.path() / "w.pt";
    wb::save_safetensors(st, timm);
    wb::save_torch_file(pt, timm);
    for (const auto& file : {st, pt}) {
      auto fresh = vit(2, experts, 3);
      const wb::InitOutcome o = wb::load_initial_weights(file, *fresh, {}, {});
      CHECK(o.timm_names);
      CHECK(o.loaded == timm.size());
      CHECK(same_weights(*source, *fresh));
      const at::Tensor images = at::randn({3, 1, 8, 8});
      CHECK(at::allclose(cls(*source, images), cls(*fresh, images), 0, 0));
    }
  }
}

TEST_CASE("init: missing and unexpected weights are refused unless allowed, shapes always") {
  wbtest::TempDir dir;
  auto source = vit(1, 0, 1);
  wb::StateDict timm = wb::to_timm(wb::module_state(*source));
  const fs::path file = dir.path() / "w.safetensors";

  SUBCASE("unexpected") {
    timm.emplace_back("head.weight", at::zeros({10, 8}));
    wb::save_safetensors(file, timm);
    auto target = vit(1, 0, 2);
    const wb::StateDict before = wb::module_state(*target);
    const std::string error = error_of([&] { wb::load_initial_weights(file, *target, {}, {}); });
    CHECK(contains(error, file.string()));
    CHECK(contains(error, "head.weight"));
    CHECK(contains(error, "init.allow_unexpected"));
    CHECK(at::equal(before[0].second, wb::module_state(*target)[0].second));  // untouched
    const auto o = wb::load_initial_weights(file, *target, {}, {"head.*"});
    CHECK(o.unexpected == std::vector<std::string>{"head.weight"});
    CHECK(same_weights(*source, *target));
  }
  SUBCASE("missing") {
    timm.erase(std::remove_if(timm.begin(), timm.end(),
                              [](const auto& kv) { return kv.first.rfind("norm.", 0) == 0; }),
               timm.end());
    wb::save_safetensors(file, timm);
    auto target = vit(1, 0, 2);
    const std::string error = error_of([&] { wb::load_initial_weights(file, *target, {}, {}); });
    CHECK(contains(error, "missing from the source: 2 weights"));
    CHECK(contains(error, "norm.weight"));
    CHECK(contains(error, "norm.bias"));
    const auto o = wb::load_initial_weights(file, *target, {"norm.*"}, {});
    CHECK(o.missing.size() == 2);
    // The allowed ones keep their initial values (LayerNorm: ones); the rest is loaded.
    CHECK(at::equal(*wb::find_tensor(wb::module_state(*target), "norm.weight"), at::ones({8})));
    CHECK(at::equal(*wb::find_tensor(wb::module_state(*target), "cls_token"),
                    *wb::find_tensor(wb::module_state(*source), "cls_token")));
  }
  SUBCASE("shape") {
    for (auto& [name, t] : timm)
      if (name == "cls_token") t = at::zeros({1, 1, 9});
    wb::save_safetensors(file, timm);
    auto target = vit(1, 0, 2);
    const std::string error =
        error_of([&] { wb::load_initial_weights(file, *target, {"*"}, {"*"}); });
    CHECK(contains(error, "cls_token is [1, 1, 9]"));
    CHECK(contains(error, "[1, 1, 8]"));
  }
}

TEST_CASE("init: from another run's checkpoint or directory, and the momentum encoder follows") {
  wbtest::TempDir dir;
  auto source = vit(2, 4, 1);
  wb::CheckpointState state;
  state.step = 5;
  state.modules["backbone"] = source;
  const fs::path run = dir.path() / "run";
  wb::save_checkpoint(run / "checkpoints" / "last.pt", state);
  for (const auto& from : {run / "checkpoints" / "last.pt", run}) {
    auto target = vit(2, 4, 2);
    const wb::InitOutcome o = wb::load_initial_weights(from, *target, {}, {});
    CHECK_FALSE(o.timm_names);
    CHECK(same_weights(*source, *target));
  }

  wb::Model model;
  model.backbone = vit(2, 4, 2);
  model.momentum = vit(2, 4, 3);
  wb::Params init("init");
  init.set("from", run.string());
  init.set("allow_missing", std::vector<std::string>{});
  init.set("allow_unexpected", std::vector<std::string>{});
  spdlog::logger log("test", std::make_shared<spdlog::sinks::null_sink_mt>());
  wb::apply_init(init, model, log);
  CHECK(same_weights(*source, *model.backbone));
  CHECK(same_weights(*source, *model.momentum));

  const std::string error =
      error_of([&] { wb::load_initial_weights(dir.path() / "nowhere", *model.backbone, {}, {}); });
  CHECK(contains(error, "nowhere"));
}

TEST_CASE(
    "config: [init] is validated and part of the id only when set, epochs = 0 trains nothing") {
  const std::string base = R"(
backbone = { plugin = "vit", dim = 8, depth = 1, heads = 2, patch = 4 }
losses = [{ plugin = "classify" }]
)";
  const wb::RunConfig plain = wb::parse_run_config(base, "a.toml", plugins());
  CHECK_FALSE(contains(plain.toml, "[init]"));
  CHECK(plain.init.text("from").empty());
  const wb::RunConfig a =
      wb::parse_run_config(base + "[init]\nfrom = \"a.pt\"\n", "a.toml", plugins());
  const wb::RunConfig b = wb::parse_run_config(
      base + "[init]\nfrom = \"b.pt\"\nallow_unexpected = [\"head.*\"]\n", "b.toml", plugins());
  CHECK(contains(a.toml, "[init]\nallow_missing = []\nallow_unexpected = []\nfrom = \"a.pt\"\n"));
  CHECK(a.id != plain.id);
  CHECK(a.id != b.id);
  CHECK(b.init.texts("allow_unexpected") == std::vector<std::string>{"head.*"});
  // The canonical text reads back to the same configuration.
  CHECK(wb::parse_run_config(a.toml, "again.toml", plugins()).id == a.id);
  const std::string error = error_of(
      [&] { wb::parse_run_config(base + "[init]\nfrm = \"a.pt\"\n", "c.toml", plugins()); });
  CHECK(contains(error, "c.toml"));
  CHECK(contains(error, "unknown key 'frm' in init"));

  const wb::RunConfig zero =
      wb::parse_run_config(base + "[train]\nepochs = 0\n", "z.toml", plugins());
  CHECK(wb::train_schedule(zero.settings.train, 10).total_steps == 0);
  const wb::RunConfig small =
      wb::parse_run_config(base + "[train]\nepochs = 0.01\n", "s.toml", plugins());
  CHECK(wb::train_schedule(small.settings.train, 10).total_steps ==
        1);  // a fraction still trains a step
}

TEST_CASE("json: strings go through the one quoter and read back, DEL and controls escaped") {
  const std::string text = std::string("a\"b\\c\n\t\x01") + '\x7f' + "\xc3\xa9";
  const std::string quoted = wb::json::quote(text);
  CHECK(quoted == wb::toml_string(text));
  CHECK(quoted.find('\x7f') == std::string::npos);
  CHECK(quoted.find("\\u007f") != std::string::npos);
  const wb::json::Value back = wb::json::parse("{\"k\": " + quoted + "}", "quoted");
  CHECK(back.find("k")->text == text);
}
