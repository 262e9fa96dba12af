// eval's and predict's network from a safetensors file under torchvision's names: the same logits as the
// checkpoint it came from, BF16/F16 widened exactly, the spec read from metadata or tensors, every mismatch
// named in one error, flags that disagree with a checkpoint refused.
#include <doctest/doctest.h>

#include "test_paths.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "apps/export.h"
#include "apps/model_file.h"
#include "apps/npy.h"
#include "engine/autograd.h"
#include "engine/serialize.h"
#include "export_fixtures.h"
#include "layers/models.h"

using engine::Tensor;
using namespace exporttest;

namespace {

// A random-weight network's tensors under its own (torchvision's) names, with non-trivial BatchNorm
// statistics and PyTorch's num_batches_tracked counters beside them.
engine::NamedTensors torchvision_style(layers::Module& m, uint64_t seed) {
  engine::NamedTensors out;
  uint64_t s = seed;
  for (auto& p : m.named_parameters()) out.emplace_back(p.name, p.tensor.detach());
  for (auto& b : m.named_buffers()) {
    Tensor t = random_tensor(b.tensor.shape(), ++s);
    if (b.name.find("running_var") != std::string::npos)
      for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = 0.5f + std::fabs(t.data()[i]);
    b.tensor.copy_from(t);
    out.emplace_back(b.name, t);
    if (b.name.find("running_mean") != std::string::npos) {
      Tensor n = Tensor::empty({}, engine::DType::s32);
      n.data<int32_t>()[0] = 1234;
      out.emplace_back(b.name.substr(0, b.name.size() - 12) + "num_batches_tracked", n);
    }
  }
  return out;
}

Tensor logits(layers::Module& m, const Tensor& x) {
  engine::NoGradGuard ng;
  m.eval();
  return m.forward(x);
}

// f32 -> bf16 bits, round to nearest even (finite inputs).
uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace

TEST_CASE("model file: a torchvision-named resnet18 gives the same logits as the network it came from") {
  TempDir dir;
  const layers::ModelSpec spec{3, 10, 32, 5};
  auto src = layers::build_model("resnet18", spec);
  engine::write_safetensors(dir.file("w.safetensors"), torchvision_style(*src, 9));
  const Tensor x = random_tensor({2, 3, 32, 32}, 3);
  const Tensor want = logits(*src, x);

  apps::ModelFileOptions o;
  o.model = "resnet18";  // the file has no metadata: classes and channels come from fc.weight and conv1.weight
  layers::LoadedModel lm = apps::load_model_file(dir.file("w.safetensors"), o, false);
  CHECK(lm.meta.spec.num_classes == 10);
  CHECK(lm.meta.spec.in_channels == 3);
  CHECK(lm.meta.mean == std::vector<float>{0.485f, 0.456f, 0.406f});
  const Tensor got = logits(*lm.model, x);
  REQUIRE(got.shape() == want.shape());
  CHECK(std::memcmp(got.data(), want.data(), sizeof(float) * got.numel()) == 0);

  // A file that does not say which network it holds needs --model.
  check_error([&] { apps::load_model_file(dir.file("w.safetensors"), {}, false); },
              {dir.file("w.safetensors"), "give --model"});
}

TEST_CASE("model file: qil checkpoint -> safetensors -> qil is bit-exact") {
  TempDir dir;
  write_tiny_checkpoint(dir.file("m.ckpt"), false);
  layers::LoadedModel a = layers::load_model_checkpoint(dir.file("m.ckpt"));
  const apps::ExportedModel e = apps::export_float(*a.model, a.meta, false);
  engine::write_safetensors(dir.file("m.safetensors"), e.tensors, e.metadata);
  // Everything (model, spec, normalization) from the export's metadata.
  layers::LoadedModel b = apps::load_model_file(dir.file("m.safetensors"), {}, true);
  CHECK(b.meta.model == a.meta.model);
  CHECK(b.meta.spec.num_classes == a.meta.spec.num_classes);
  CHECK(b.meta.spec.image_size == a.meta.spec.image_size);
  CHECK(b.meta.mean == a.meta.mean);
  CHECK(b.meta.std == a.meta.std);
  const apps::ExportedModel again = apps::export_float(*b.model, b.meta, false);
  REQUIRE(again.tensors.size() == e.tensors.size());
  for (size_t i = 0; i < e.tensors.size(); ++i) {
    CAPTURE(e.tensors[i].first);
    CHECK(again.tensors[i].first == e.tensors[i].first);
    REQUIRE(again.tensors[i].second.shape() == e.tensors[i].second.shape());
    CHECK(std::memcmp(again.tensors[i].second.data(), e.tensors[i].second.data(),
                      sizeof(float) * e.tensors[i].second.numel()) == 0);
  }
  CHECK(again.metadata == e.metadata);
  const Tensor x = random_tensor({3, 1, 8, 8}, 4);
  const Tensor ya = logits(*a.model, x), yb = logits(*b.model, x);
  CHECK(std::memcmp(ya.data(), yb.data(), sizeof(float) * ya.numel()) == 0);
}

TEST_CASE("model file: BF16 tensors are widened exactly") {
  TempDir dir;
  const layers::ModelSpec spec{1, 4, 8, 2};
  auto src = layers::build_model("resnet20", spec);
  engine::NamedTensors ts = torchvision_style(*src, 5);
  for (auto& [n, t] : ts) {
    if (t.dtype() != engine::DType::f32) continue;
    Tensor h = Tensor::empty(t.shape(), engine::DType::bf16);
    for (int64_t i = 0; i < t.numel(); ++i) h.data<uint16_t>()[i] = to_bf16(t.data()[i]);
    t = h;
  }
  engine::write_safetensors(dir.file("h.safetensors"), ts);
  apps::ModelFileOptions o;
  o.model = "resnet20";
  o.image_size = 8;
  layers::LoadedModel lm = apps::load_model_file(dir.file("h.safetensors"), o, false);
  CHECK(lm.meta.spec.in_channels == 1);
  CHECK(lm.meta.spec.num_classes == 4);
  int checked = 0;
  for (auto& p : lm.model->named_parameters()) {
    auto it = std::find_if(ts.begin(), ts.end(), [&](const auto& nt) { return nt.first == p.name; });
    REQUIRE(it != ts.end());
    for (int64_t i = 0; i < p.tensor.numel(); ++i) {
      const uint32_t want = static_cast<uint32_t>(it->second.data<uint16_t>()[i]) << 16;
      uint32_t got;
      std::memcpy(&got, &p.tensor.data()[i], 4);
      checked += got == want;
      REQUIRE(got == want);
    }
  }
  CHECK(checked > 1000);
}

TEST_CASE("model file: every missing, unexpected and misshapen tensor in one error, the network untouched") {
  TempDir dir;
  auto src = layers::build_model("resnet20", layers::ModelSpec{3, 10, 32, 1});
  engine::NamedTensors ts = torchvision_style(*src, 7);
  engine::NamedTensors bad;
  for (auto& [n, t] : ts) {
    if (n == "fc.bias" || n == "layer2.1.bn1.running_var") continue;
    if (n == "conv1.weight") t = Tensor::zeros({16, 3, 5, 5});
    bad.emplace_back(n, t);
  }
  bad.emplace_back("layer9.0.conv1.weight", Tensor::zeros({2}));
  engine::write_safetensors(dir.file("bad.safetensors"), bad);
  apps::ModelFileOptions o;
  o.model = "resnet20";
  check_error([&] { apps::load_model_file(dir.file("bad.safetensors"), o, false); },
              {dir.file("bad.safetensors"), "1 with another shape: tensor 'conv1.weight' [16, 3, 5, 5] (the model's: [16, 3, 3, 3])",
               "2 missing (the file has no tensor ", "'layer2.1.bn1.running_var'", "'fc.bias'",
               "1 the network does not have (tensor 'layer9.0.conv1.weight')"});
  // A checkpoint's tensors are checked the same way: nothing is copied before everything fits.
  auto target = layers::build_model("resnet20", layers::ModelSpec{3, 10, 32, 1});
  const std::vector<float> before = target->named_parameters()[0].tensor.to_vector();
  check_error([&] { layers::load_model_tensors(*target, bad, "f", false); }, {"f: its tensors do not fit"});
  CHECK(target->named_parameters()[0].tensor.to_vector() == before);
}

TEST_CASE("model file: files that are not float weights, and flags that contradict a checkpoint") {
  TempDir dir;
  write_tiny_checkpoint(dir.file("q.ckpt"), true);
  layers::LoadedModel q = layers::load_model_checkpoint(dir.file("q.ckpt"));
  apps::ExportedModel i = apps::export_int(*q.model, q.meta);
  engine::write_safetensors(dir.file("i.safetensors"), i.tensors, i.metadata);
  check_error([&] { apps::load_model_file(dir.file("i.safetensors"), {}, false); },
              {dir.file("i.safetensors"), "an integer export"});
  apps::ExportedModel f = apps::export_float(*q.model, q.meta, true);
  engine::write_safetensors(dir.file("p.safetensors"), f.tensors, f.metadata);
  check_error([&] { apps::load_model_file(dir.file("p.safetensors"), {}, false); },
              {dir.file("p.safetensors"), "holds quantizer parameters", "--with-quant-params"});

  apps::ModelFileOptions o;
  o.model = "resnet18";
  check_error([&] { apps::load_model_file(dir.file("q.ckpt"), o, false); },
              {"--model resnet18", "checkpoint of a 'lenet' network"});
  o = {};
  o.num_classes = 7;
  check_error([&] { apps::load_model_file(dir.file("q.ckpt"), o, false); }, {"--num-classes 7", "with 3"});
  o = {};
  o.model = "lenet";  // agreeing flags are fine
  o.num_classes = 3;
  CHECK(apps::load_model_file(dir.file("q.ckpt"), o, false).meta.model == "lenet");
  o = {};
  o.model = "resnet20";
  check_error([&] { apps::load_model_file(dir.file("p.safetensors"), o, false); }, {"holds quantizer parameters"});
}

TEST_CASE("model file: normalization of a file without metadata") {
  TempDir dir;
  auto src = layers::build_model("resnet20", layers::ModelSpec{1, 10, 8, 1});
  engine::write_safetensors(dir.file("g.safetensors"), torchvision_style(*src, 2));
  apps::ModelFileOptions o;
  o.model = "resnet20";
  o.image_size = 8;
  // eval feeds raw images: a grey-scale network needs its mean and std.
  check_error([&] { apps::load_model_file(dir.file("g.safetensors"), o, true); },
              {dir.file("g.safetensors"), "1-channel network", "give --mean and --std"});
  CHECK(apps::load_model_file(dir.file("g.safetensors"), o, false).meta.mean.empty());  // predict: no need
  o.mean = {0.3f};
  o.std = {0.2f, 0.1f};
  check_error([&] { apps::load_model_file(dir.file("g.safetensors"), o, true); }, {"--mean has 1 values but --std has 2"});
  o.std = {0.2f};
  layers::LoadedModel lm = apps::load_model_file(dir.file("g.safetensors"), o, true);
  CHECK(lm.meta.mean == std::vector<float>{0.3f});
  CHECK(lm.meta.std == std::vector<float>{0.2f});
  o.std = {0.f};
  check_error([&] { apps::load_model_file(dir.file("g.safetensors"), o, true); }, {"std must be positive"});
}

TEST_CASE("model file: qil predict and qil eval take a safetensors file on the command line") {
  const std::string bin = testpaths::qil_binary();
  TempDir dir;
  write_tiny_checkpoint(dir.file("m.ckpt"), false);
  layers::LoadedModel a = layers::load_model_checkpoint(dir.file("m.ckpt"));
  const apps::ExportedModel e = apps::export_float(*a.model, a.meta, false);
  engine::write_safetensors(dir.file("m.safetensors"), e.tensors, e.metadata);
  apps::write_npy(dir.file("x.npy"), random_tensor({3, 1, 8, 8}, 3));
  const std::string q = "'" + std::string(bin) + "' ";
  const std::string quiet = " >/dev/null 2>&1";
  for (const char* w : {"m.ckpt", "m.safetensors"})
    REQUIRE(std::system((q + "predict '" + dir.file(w) + "' --input '" + dir.file("x.npy") + "' --output '" +
                         dir.file(std::string(w) + ".npy") + "'" + quiet).c_str()) == 0);
  const Tensor ya = apps::read_npy(dir.file("m.ckpt.npy")), yb = apps::read_npy(dir.file("m.safetensors.npy"));
  REQUIRE(ya.shape() == yb.shape());
  CHECK(std::memcmp(ya.data(), yb.data(), sizeof(float) * ya.numel()) == 0);
  // --model against the file's own metadata.
  CHECK(std::system((q + "predict '" + dir.file("m.safetensors") + "' --model resnet18 --input '" + dir.file("x.npy") +
                     "' --output '" + dir.file("z.npy") + "'" + quiet).c_str()) != 0);
  CHECK_FALSE(fs::exists(dir.file("z.npy")));
}
