// `qil train`: sets up a run from its configuration (run directory, where the network comes from — a run to
// resume, an --init file or fresh initialization —, the data, the teacher) and hands it to the stage runner
// (apps/training/stage_runner.h). Not the loop itself and not the flags (apps/config.h).
#pragma once
#include "apps/config.h"

namespace apps {

// Runs a whole training job; returns the process exit code. Throws engine::Error on bad input.
int run_train(TrainConfig cfg);

}  // namespace apps
