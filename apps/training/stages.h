// Training stages: `--stages 32,5,4,3,2` (one entry per stage; `32` = full precision, `N` = N-bit weights and
// activations, `wNaM` = different widths), `--stage-epochs 10,5,...` and `--stage-lr 0.1,0.01,...` (each one
// number for all stages or one per stage). The lists arrive split (CLI11 splits the flags' commas).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace apps::training {

struct Stage {
  int wbits = 32;  // 32 = full precision
  int abits = 32;
  int epochs = 1;
  double lr = 0;  // base LR of this stage (0 = --lr)
  bool quantized() const { return wbits < 32 || abits < 32; }
  std::string name() const;  // "fp32", "w4a4"
};

// Throws engine::Error naming the bad entry: bits outside 2..8 (or 32), a list that is not decreasing,
// an epoch or LR list whose length matches neither 1 nor the stage count, a value that is not positive.
std::vector<Stage> parse_stages(const std::vector<std::string>& stages, const std::vector<int64_t>& stage_epochs,
                                const std::vector<double>& stage_lr = {});
// "w4a8", "4" (= w4a4), "32" -> widths; throws on anything else.
Stage parse_stage_entry(const std::string& entry);

}  // namespace apps::training
