// libFuzzer target: a `qil train` TOML config file on any bytes, read through the same CLI11 options and
// checks as `qil train --config FILE`, then the cross-field validation (whose errors name flags, not the file).
#include <CLI/CLI.hpp>

#include "apps/config.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, ".toml");
  CLI::App app;
  apps::TrainConfig cfg;
  apps::add_train_flags(app, cfg);
  app.parse(std::vector<std::string>{});
  bool read = false;
  fuzz::expect_clean(path, [&] {
    apps::read_config_file(path, app, cfg);
    read = true;
  });
  if (!read) return 0;
  try {
    apps::validate(cfg);
    (void)cfg.stage_list();
  } catch (const engine::Error& e) {
    fuzz::refused(e.what(), e.what());  // names a flag, not the file
  }
  return 0;
}
