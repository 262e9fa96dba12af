// `qil export --format int` says everything: tests/apps/int_reader.py, an independent NumPy reader written from
// docs/export.md, rebuilds LeNet and ResNet-20 from the integers, scales and metadata alone, and its logits must
// match qil's fake-quantized network on the same batch, for every quantizer kind.
#include <doctest/doctest.h>

#include "test_paths.h"

#include <cmath>
#include <algorithm>
#include <cstdlib>
#include <vector>

#include "apps/export.h"
#include "apps/predict.h"
#include "apps/npy.h"
#include "engine/autograd.h"
#include "engine/serialize.h"
#include "export_fixtures.h"
#include "layers/models.h"
#include "layers/quantize.h"

using engine::Tensor;
using namespace exporttest;

namespace {

// Exports `ckpt` as int, runs the reader and qil on the same batch; returns {qil's logits, the reader's}.
std::pair<Tensor, Tensor> logits_of_reader(const TempDir& dir, const std::string& ckpt) {
  layers::LoadedModel lm = layers::load_model_checkpoint(ckpt);
  const apps::ExportedModel e = apps::export_int(*lm.model, lm.meta);
  engine::write_safetensors(dir.file("i.safetensors"), e.tensors, e.metadata);
  const Tensor x = random_tensor({16, 1, 8, 8}, 77);  // (N, C, H, W)
  apps::write_npy(dir.file("x.npy"), x);
  const Tensor want = apps::predict_logits(*lm.model, lm.meta.spec, x, 16, "x");
  const char* py = std::getenv("QIL_PYTHON");
  const std::string reader = testpaths::source_dir() + "/tests/apps/int_reader.py";
  const std::string cmd = std::string(py ? py : "/usr/bin/python3") + " '" + reader + "' '" +
                          dir.file("i.safetensors") + "' '" + dir.file("x.npy") + "' '" + dir.file("y.npy") + "'";
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "the NumPy reader failed (needs python3-numpy): ", cmd);
  return {want, apps::read_npy(dir.file("y.npy"))};
}

}  // namespace

TEST_CASE("int export: the NumPy reader reproduces qil's logits from the integers and scales alone") {
  for (const std::string kind : {"qil", "lsq", "pact", "dorefa"}) {
    for (const std::string model : {"lenet", "resnet20"}) {
      CAPTURE(kind);
      CAPTURE(model);
      TempDir dir;
      if (model == "lenet") write_tiny_checkpoint(dir.file("m.ckpt"), true, kind);  // conv2 W4A4, fc1 W3A4
      else write_model_checkpoint(dir.file("m.ckpt"), quantized_resnet20(kind, 2, 500));
      const auto [want, got] = logits_of_reader(dir, dir.file("m.ckpt"));
      check_same_logits(want, got);  // the reader computes in float64, qil in float32
    }
  }
}
