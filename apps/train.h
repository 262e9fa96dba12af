// `qil train`: sets up a run from its configuration (run directory, where the network comes from — a run to
// resume, an --init file or fresh initialization —, the data, the teacher) and hands it to the stage runner
// (apps/training/stage_runner.h). Not the loop itself and not the flags (apps/config.h).
#pragma once
#include "apps/config.h"
#include "apps/data_setup.h"
#include "apps/training/stage_runner.h"

namespace apps {

// The one place the command line's TrainConfig becomes the options of the data set-up and of the training
// library (after validate(): every name in it is known).
DataOptions data_options(const TrainConfig& cfg);
training::RunOptions run_options(const TrainConfig& cfg);

// What --int8-forward means for a run: true or false as given; auto is on only where the integer forward was
// measured faster than the float one (docs/int8.md): fp32, int8 kernels with VNNI on every rank, and images of at
// least kInt8ForwardMinSide pixels a side (ResNet-18 @224: 1.27x qil's FP32 step on Zen 5; ResNet-20 @32: no
// faster; under bf16: slower). `why` says which condition decided, for the run's log.
constexpr int64_t kInt8ForwardMinSide = 224;
struct Int8ForwardChoice {
  bool on = false;
  std::string why;
};
Int8ForwardChoice resolve_int8_forward(const std::string& mode, const std::string& precision, int64_t image_side,
                                       bool vnni);

// Runs a whole training job; returns the process exit code. Throws engine::Error on bad input.
int run_train(TrainConfig cfg);

}  // namespace apps
