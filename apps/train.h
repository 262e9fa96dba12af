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

// Runs a whole training job; returns the process exit code. Throws engine::Error on bad input.
int run_train(TrainConfig cfg);

}  // namespace apps
