// The typed configuration of `qil train` without running the `qil` binary: the resolved config written as TOML
// reads back to the same configuration (layer names with dots included), a failed check names the flag, the
// value and (from a file) the key and file, cross-field checks, and the one conversion of a TrainConfig into
// the data set-up's and the training library's options. The library itself: tests/training/.
#include <CLI/CLI.hpp>

#include <fstream>

#include "apps/config.h"
#include "apps/train.h"
#include "run_qil.h"

using qiltest::ScratchDir;

namespace {

// A fresh command with the train flags bound to `cfg`, parsed from `args`.
struct TrainCli {
  apps::TrainConfig cfg;
  CLI::App app;
  explicit TrainCli(std::vector<std::string> args = {}) {
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    apps::add_train_flags(app, cfg);
    std::reverse(args.begin(), args.end());  // CLI11 takes a vector back to front
    app.parse(args);
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("config: typed lists from the command line, the resolved TOML reads back to the same configuration") {
  TrainCli a({"--model", "resnet20", "--stages", "32,w4a8,3", "--stage-epochs", "3,1,2", "--stage-lr",
              "0.05,0.005,0.0025", "--schedule", "multistep", "--milestones", "1.5,2", "--augment", "flip",
              "--lr", "0.1", "--weight-decay", "1e-4", "--nesterov", "--seed", "42", "--label-smoothing", "0.1"});
  CHECK(a.cfg.stages == std::vector<std::string>{"32", "w4a8", "3"});
  CHECK(a.cfg.stage_epochs == std::vector<int64_t>{3, 1, 2});
  CHECK(a.cfg.stage_lr == std::vector<double>{0.05, 0.005, 0.0025});
  CHECK(a.cfg.milestones == std::vector<double>{1.5, 2});
  CHECK(a.cfg.augment == std::vector<std::string>{"flip"});
  a.cfg.layers["layer1.0.conv1"] = apps::LayerOverride{3, 4, false, ""};
  a.cfg.layers["fc"] = apps::LayerOverride{0, 0, true, ""};
  const std::string text = apps::to_toml(a.cfg);
  CHECK(text.find("stages = '32,w4a8,3'") != std::string::npos);  // as typed, readable by older builds
  CHECK(text.find("lr = 0.1\n") != std::string::npos);            // the shortest exact decimal
  CHECK(text.find("[layers.'layer1.0.conv1']") != std::string::npos);  // quoted: the dots are not nesting
  ScratchDir tmp;
  std::ofstream(tmp / "resolved.toml") << text;
  TrainCli b;
  apps::read_config_file(tmp / "resolved.toml", b.app, b.cfg);
  CHECK(apps::to_toml(b.cfg) == text);
  CHECK(b.cfg.stages == a.cfg.stages);
  CHECK(b.cfg.stage_epochs == a.cfg.stage_epochs);
  CHECK(b.cfg.stage_lr == a.cfg.stage_lr);
  CHECK(b.cfg.milestones == a.cfg.milestones);
  CHECK(b.cfg.augment == a.cfg.augment);
  CHECK(b.cfg.weight_decay == a.cfg.weight_decay);
  CHECK(b.cfg.label_smoothing == a.cfg.label_smoothing);
  CHECK(b.cfg.seed == 42);
  CHECK(b.cfg.nesterov);
  REQUIRE(b.cfg.layers.size() == 2);
  CHECK(b.cfg.layers.count("layer1") == 0);  // not split at the dots
  CHECK(b.cfg.layers["layer1.0.conv1"].wbits == 3);
  CHECK(b.cfg.layers["layer1.0.conv1"].abits == 4);
  CHECK(b.cfg.layers["fc"].exclude);
}

TEST_CASE("config: a file with a dotted layer name, arrays and comma strings both read as lists") {
  ScratchDir tmp;
  std::ofstream(tmp / "c.toml") << "stages = '32,4'\nstage_epochs = [2, 1]\naugment = ['crop']\n"
                                << "[layers.\"layer2.1.conv2\"]\nabits = 8\n";
  TrainCli c;
  apps::read_config_file(tmp / "c.toml", c.app, c.cfg);
  CHECK(c.cfg.stages == std::vector<std::string>{"32", "4"});
  CHECK(c.cfg.stage_epochs == std::vector<int64_t>{2, 1});
  CHECK(c.cfg.augment == std::vector<std::string>{"crop"});
  REQUIRE(c.cfg.layers.count("layer2.1.conv2") == 1);
  CHECK(c.cfg.layers["layer2.1.conv2"].abits == 8);
  CHECK(c.cfg.layers["layer2.1.conv2"].wbits == 0);
}

TEST_CASE("config: a failed check names the flag and the value, from a file also the key and the file") {
  CHECK(error_of([] { TrainCli({"--batch", "0"}); }) == "--batch must be at least 1, got 0");
  CHECK(error_of([] { TrainCli({"--momentum", "1.5"}); }) == "--momentum must be in [0, 1), got 1.5");
  CHECK(error_of([] { TrainCli({"--stage-epochs", "2,0"}); }) == "--stage-epochs must be at least 1, got 0");
  const std::string member = error_of([] { TrainCli({"--progress", "fancy"}); });
  CHECK(member.find("--progress") != std::string::npos);
  CHECK(member.find("fancy") != std::string::npos);
  CHECK(error_of([] { TrainCli({"--stages", "32,9"}); }).find("bit width 9") != std::string::npos);
  ScratchDir tmp;
  std::ofstream(tmp / "bad.toml") << "batch = 64\nlr = -2.5\n";
  TrainCli c;
  const std::string e = error_of([&] { apps::read_config_file(tmp / "bad.toml", c.app, c.cfg); });
  CHECK(e.find(tmp / "bad.toml") != std::string::npos);
  CHECK(e.find("key 'lr'") != std::string::npos);
  CHECK(e.find("--lr must be positive, got -2.5") != std::string::npos);
  std::ofstream(tmp / "list.toml") << "lr = [0.1, 0.2]\n";
  TrainCli d;
  CHECK(error_of([&] { apps::read_config_file(tmp / "list.toml", d.app, d.cfg); }).find("key 'lr' takes one value") !=
        std::string::npos);
  // Cross-field checks stay in validate().
  TrainCli m({"--schedule", "multistep"});
  CHECK(error_of([&] { apps::validate(m.cfg); }).find("needs --milestones") != std::string::npos);
}

TEST_CASE("--distill and --no-pruning: checked against the options they need") {
  auto err = [](std::vector<std::string> args) {
    return error_of([&] {
      TrainCli c(std::move(args));
      apps::validate(c.cfg);
    });
  };
  CHECK(err({"--distill", "4", "--stages", "2"}).find("--distill needs --init") != std::string::npos);
  CHECK(err({"--distill", "4", "--init", "x.ckpt", "--targets", "teacher", "--stages", "2"}).find("give one") !=
        std::string::npos);
  CHECK(err({"--no-pruning", "--quantizer", "lsq", "--stages", "2"}).find("--quantizer qil") != std::string::npos);
  CHECK(err({"--distill-weight", "1.5"}).find("--distill-weight") != std::string::npos);
  CHECK(err({"--first-last", "4"}).find("--first-last must be fp, 8 or same") != std::string::npos);
  CHECK(err({"--distill", "4", "--init", "x.ckpt", "--no-pruning", "--first-last", "same", "--stages", "2"}).empty());
  // --pact-calib mse needs PACT, names itself and the family; percentile (the default) goes with any quantizer.
  const std::string pc = err({"--pact-calib", "mse", "--quantizer", "qil", "--stages", "2"});
  CHECK(pc.find("--pact-calib mse") != std::string::npos);
  CHECK(pc.find("--quantizer pact") != std::string::npos);
  CHECK(err({"--pact-calib", "mse", "--quantizer", "pact", "--stages", "2"}).empty());
  CHECK(err({"--pact-calib", "percentile", "--quantizer", "lsq", "--stages", "2"}).empty());
  // It reaches the plan the stage runner calibrates with.
  CHECK(apps::run_options(TrainCli({"--pact-calib", "mse", "--quantizer", "pact"}).cfg).quant.pact_calib ==
        quant::ActCalib::mse);
  CHECK(apps::run_options(TrainCli({"--quantizer", "pact"}).cfg).quant.pact_calib == quant::ActCalib::percentile);
}

TEST_CASE("train's options: the data flags' defaults are DataOptions', run_options types what the loop reads") {
  const TrainCli defaults;
  const apps::DataOptions d = apps::data_options(defaults.cfg), def;  // qil eval --quant relies on def
  CHECK(d.data == def.data);
  CHECK(d.data_dir == def.data_dir);
  CHECK(d.eval_data == def.eval_data);
  CHECK(d.val_size == def.val_size);
  CHECK(d.seed == def.seed);
  CHECK(d.train_subset == def.train_subset);
  CHECK(d.test_subset == def.test_subset);
  CHECK(d.image_size == def.image_size);
  CHECK((d.crop && d.flip && def.crop && def.flip));
  CHECK(d.crop_padding == def.crop_padding);
  CHECK(d.max_bad_files == def.max_bad_files);
  CHECK(d.max_idx_mb == def.max_idx_mb);
  const apps::training::RunOptions o = apps::run_options(defaults.cfg);
  CHECK(o.step.balance == layers::GradBalance::sqrt);
  CHECK(o.schedule == apps::training::LrShape::cosine);
  CHECK(o.quant.weight_calib == quant::WeightCalib::mse);  // the command's default; layers::QuantPlan's is max
  CHECK(o.quant.first_last_bits == 32);
  CHECK_FALSE(o.freeze_output_scales);
  CHECK_FALSE(o.skip_nonfinite);

  TrainCli c({"--quant-recipe", "paper", "--freeze-intervals", "--schedule", "multistep", "--milestones", "2",
              "--on-nan", "skip", "--allreduce", "overlap", "--bucket-mb", "2", "--augment", "flip", "--first-last",
              "same", "--quantizer", "lsq", "--act-calib", "percentile", "--label-smoothing", "0.25",
              "--progress", "none"});
  c.cfg.layers["fc1"] = apps::LayerOverride{0, 0, true, ""};
  const apps::training::RunOptions p = apps::run_options(c.cfg);
  CHECK(p.step.balance == layers::GradBalance::none);  // the paper's rule: raw interval gradients ...
  CHECK(p.freeze_output_scales);                       // ... and fixed output scales
  CHECK((p.freeze_weight_intervals && p.freeze_act_intervals));
  CHECK(p.schedule == apps::training::LrShape::multistep);
  CHECK(p.milestones == std::vector<double>{2});
  CHECK(p.skip_nonfinite);
  CHECK(p.step.overlap);
  CHECK(p.step.bucket_bytes == int64_t(2) << 20);
  CHECK(p.step.label_smoothing == 0.25f);
  CHECK(p.progress == apps::training::ProgressMode::none);
  CHECK(p.quant.first_last_bits == 0);
  CHECK(p.quant.quantizer == "lsq");
  CHECK(p.quant.act_calib == quant::ActCalib::percentile);
  CHECK(p.quant.overrides.at("fc1").exclude);
  CHECK_FALSE(apps::data_options(c.cfg).crop);
}

TEST_CASE("--int8-forward: auto | true | false, alone true, a file's boolean read, auto on only where measured faster") {
  CHECK(TrainCli().cfg.int8_forward == "auto");
  CHECK(TrainCli({"--int8-forward"}).cfg.int8_forward == "true");
  CHECK(TrainCli({"--int8-forward", "false"}).cfg.int8_forward == "false");
  CHECK(TrainCli({"--int8-forward", "--seed", "3"}).cfg.seed == 3);  // alone, it does not swallow the next flag
  const std::string bad = error_of([] { TrainCli({"--int8-forward", "yes"}); });
  CHECK_MESSAGE((bad.find("--int8-forward") != std::string::npos && bad.find("yes") != std::string::npos), bad);
  // config.toml files written before auto existed hold a TOML boolean.
  ScratchDir tmp;
  std::ofstream(tmp / "old.toml") << "int8_forward = true\n";
  TrainCli f;
  apps::read_config_file(tmp / "old.toml", f.app, f.cfg);
  CHECK(f.cfg.int8_forward == "true");
  CHECK(apps::run_options(f.cfg).int8_forward);
  CHECK_FALSE(apps::run_options(TrainCli({"--int8-forward", "false"}).cfg).int8_forward);

  using apps::resolve_int8_forward;
  const int64_t big = apps::kInt8ForwardMinSide;
  CHECK(resolve_int8_forward("auto", "fp32", big, true).on);  // ResNet-18 @224 on VNNI: measured 1.27x
  const apps::Int8ForwardChoice small = resolve_int8_forward("auto", "fp32", 32, true);
  CHECK_FALSE(small.on);  // ResNet-20 @32: no faster
  CHECK_MESSAGE(small.why.find("32-pixel images") != std::string::npos, small.why);
  const apps::Int8ForwardChoice bf16 = resolve_int8_forward("auto", "bf16", big, true);
  CHECK_FALSE(bf16.on);  // the bf16 float forward is faster
  CHECK_MESSAGE(bf16.why.find("--precision bf16") != std::string::npos, bf16.why);
  const apps::Int8ForwardChoice avx2 = resolve_int8_forward("auto", "fp32", big, false);
  CHECK_FALSE(avx2.on);  // not measured faster without VNNI
  CHECK_MESSAGE(avx2.why.find("VNNI") != std::string::npos, avx2.why);
  CHECK_FALSE(resolve_int8_forward("auto", "fp32", big - 1, true).on);
  // An explicit choice is kept whatever the machine and data.
  CHECK(resolve_int8_forward("true", "bf16", 28, false).on);
  CHECK_FALSE(resolve_int8_forward("false", "fp32", 512, true).on);
}
