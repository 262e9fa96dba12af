// A whole run through the training library, as a program other than `qil` would drive it: datasets made in
// memory (no data flags, no files), RunOptions filled in code, a StageRunner over two stages (full precision,
// then W4A4) that writes metrics.csv, intervals.jsonl and its checkpoints; stopped after a few steps, it saves
// where it stood. Not the command line (tests/apps/test_train_cli.cpp) and not the step (test_trainer.cpp).
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <nlohmann/json.hpp>

#include "apps/training/run_data.h"
#include "apps/training/run_log.h"
#include "apps/training/run_state.h"
#include "apps/training/stage_runner.h"
#include "data/dataset.h"
#include "data/image_set.h"
#include "engine/serialize.h"
#include "layers/model_io.h"
#include "layers/models.h"

namespace fs = std::filesystem;
using apps::training::RunOptions;
using apps::training::RunState;
using apps::training::TrainingRun;

namespace {

struct Scratch {
  fs::path path;
  Scratch() {
    char tmpl[] = "/tmp/qil-training-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// n images (n, 1, 28, 28) u8 whose class (i % 10) sets which rows are bright: learnable in a few steps.
std::shared_ptr<const data::ImageSet> striped_images(int64_t n) {
  auto s = std::make_shared<data::ImageSet>();
  s->images = engine::Tensor::empty({n, 1, 28, 28}, engine::DType::u8);
  s->num_classes = 10;
  s->source = "memory";
  uint8_t* p = s->images.data<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int32_t c = static_cast<int32_t>(i % 10);
    s->labels.push_back(c);
    for (int64_t y = 0; y < 28; ++y)
      for (int64_t x = 0; x < 28; ++x) p[(i * 28 + y) * 28 + x] = (y / 3) % 10 == c ? 220 : (x * 7 + i) % 40;
  }
  return s;
}

apps::training::RunData in_memory_data() {
  auto images = striped_images(80);
  std::vector<int64_t> train, val;
  for (int64_t i = 0; i < 80; ++i) (i < 64 ? train : val).push_back(i);
  const std::vector<float> mean{0.2f}, std{0.3f};
  apps::training::RunData d;
  const auto no_augment = data::SmallImageTransform::train(mean, std, 0, false);
  d.train = std::make_shared<data::InMemoryDataset>(images, train, no_augment);
  d.calib = std::make_shared<data::InMemoryDataset>(images, train, data::SmallImageTransform::eval(mean, std));
  d.val = std::make_shared<data::InMemoryDataset>(images, val, data::SmallImageTransform::eval(mean, std));
  d.train_name = "striped";
  d.in_channels = 1;
  d.num_classes = 10;
  d.image_size = 28;
  d.mean = mean;
  d.std = std;
  return d;
}

TrainingRun lenet_run(const std::string& dir) {
  TrainingRun run;
  run.stages = apps::training::parse_stages({"32", "4"}, {1});
  run.data = in_memory_data();
  run.meta.model = "lenet";
  run.meta.spec = layers::ModelSpec{1, 10, 28, 5};
  run.meta.mean = run.data.mean;
  run.meta.std = run.data.std;
  run.model = layers::build_model(run.meta.model, run.meta.spec);
  run.dir = dir;
  run.config_toml = "# written by a test\n";
  return run;
}

RunOptions small_options() {
  RunOptions o;
  o.batch = 16;
  o.lr = 0.05;
  o.calib_batches = 2;
  o.quant.wbits = o.quant.abits = 32;  // the runner sets each stage's widths
  return o;
}

int64_t lines_of(const fs::path& file) {
  std::ifstream f(file);
  int64_t n = 0;
  for (std::string line; std::getline(f, line);) n += !line.empty();
  return n;
}

RunState state_in(const fs::path& ckpt) {
  const engine::Checkpoint ck = engine::read_checkpoint(ckpt.string());
  return RunState::parse(ck.text("run_state"), ckpt.string());
}

}  // namespace

TEST_CASE("StageRunner without the command line: two stages on in-memory data, the run directory written") {
  Scratch dir;
  TrainingRun run = lenet_run(dir.path.string());
  const apps::training::RunLog log(run.dir, true);
  const int code = apps::training::StageRunner(run, small_options(), RunState::start(2), log).run();
  CHECK(code == 0);
  CHECK(lines_of(dir.path / "metrics.csv") == 1 + 2);  // the header, one row per epoch of each stage
  CHECK(lines_of(dir.path / "intervals.jsonl") == 2 * 2);  // conv2 and fc1: calibration (epoch 0) and epoch 1
  for (const char* f : {"last.ckpt", "best.ckpt", "best-fp32.ckpt", "best-w4a4.ckpt"})
    CHECK_MESSAGE(fs::exists(dir.path / f), f);
  CHECK(state_in(dir.path / "last.ckpt").position.stage == 2);  // finished: nothing left to resume
  const engine::Checkpoint ck = engine::read_checkpoint((dir.path / "best.ckpt").string());
  const layers::ModelMeta meta = layers::meta_from_json(nlohmann::json::parse(ck.text("model_meta")), "best.ckpt");
  CHECK(meta.model == "lenet");
  CHECK(ck.text("config") == run.config_toml);
}

TEST_CASE("StageRunner: stop_after_steps saves `last` where the run stands and returns 0") {
  Scratch dir;
  TrainingRun run = lenet_run(dir.path.string());
  const apps::training::RunLog log(run.dir, true);
  RunOptions o = small_options();
  o.stop_after_steps = 3;
  CHECK(apps::training::StageRunner(run, o, RunState::start(2), log).run() == 0);
  const RunState s = state_in(dir.path / "last.ckpt");
  CHECK(s.position.stage == 0);
  CHECK(s.position.step == 3);
  CHECK(s.position.batch == 3);
  CHECK(lines_of(dir.path / "metrics.csv") == 1);  // no epoch finished
}
