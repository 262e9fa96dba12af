// qil inspect: history readers, the HTML report of a synthetic run directory (sections, numbers, well-formed
// SVG, nothing external), bare checkpoints, full-precision runs, JSON round trip, activation statistics and
// errors for files that are not checkpoints.
#include <doctest/doctest.h>

#include "test_paths.h"
#include <stdlib.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <filesystem>
#include <fstream>
#include <set>

#include "apps/inspect/activations.h"
#include "apps/inspect/history.h"
#include "apps/inspect/page.h"
#include "apps/inspect/target.h"
#include "layers/model_io.h"
#include "apps/training/report.h"
#include "engine/check.h"
#include "engine/serialize.h"
#include "layers/models.h"
#include "layers/quantize.h"
#include "markup_check.h"

using namespace apps;
using apps::training::layer_report_from_json;
using apps::training::layer_report_json;
namespace fs = std::filesystem;
using engine::Tensor;

namespace {

struct TempDir {
  TempDir() {
    std::string t = (fs::temp_directory_path() / "qil_html_XXXXXX").string();
    REQUIRE(::mkdtemp(t.data()) != nullptr);
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (fs::path(path) / name).string(); }
  std::string path;
};

// Images with values spread over [-1, 3): positive and negative inputs, some beyond any 99.9th percentile.
class RampDataset : public data::Dataset {
 public:
  explicit RampDataset(int64_t n, int64_t side) : n_(n), side_(side) {}
  int64_t size() const override { return n_; }
  engine::Shape sample_shape() const override { return {1, side_, side_}; }
  int64_t num_classes() const override { return 10; }
  int32_t get(int64_t index, float* out, engine::Generator&) const override {
    engine::Generator g(static_cast<uint64_t>(index) + 17);  // the sample's own values, whatever the loader's rng
    for (int64_t i = 0; i < side_ * side_; ++i) out[i] = 4.f * g.uniform() - 1.f;
    return static_cast<int32_t>(index % 10);
  }

 private:
  int64_t n_, side_;
};

const layers::ModelSpec kSpec{1, 10, 8, 3};  // a LeNet on 8x8 single-channel images

layers::ModelMeta tiny_meta() {
  layers::ModelMeta m;
  m.model = "lenet";
  m.spec = kSpec;
  m.mean = {0.f};
  m.std = {1.f};
  return m;
}

// A LeNet with conv2 and fc1 at W4A4 (conv1 and fc2 full precision by default), calibrated on RampDataset.
std::unique_ptr<layers::Module> tiny_quantized_model(bool first_last_8bit = false) {
  auto m = layers::build_model("lenet", kSpec);
  layers::QuantPlan plan;
  plan.wbits = plan.abits = 4;
  plan.first_last_bits = first_last_8bit ? 8 : 32;
  layers::apply_quant_plan(*m, plan);
  RampDataset ds(16, 8);
  int64_t next = 0;
  engine::Generator rng(0);
  layers::calibrate(*m, 2, [&](Tensor& x) {
    if (next >= 2) return false;
    x = Tensor::empty({8, 1, 8, 8});  // (N, C, H, W)
    for (int64_t i = 0; i < 8; ++i) ds.get(next * 8 + i, x.data() + i * 64, rng);
    ++next;
    return true;
  });
  return m;
}

void write_ckpt(const std::string& path, layers::Module& m) {
  engine::Checkpoint ck;
  layers::add_model(ck, m, tiny_meta());
  engine::write_checkpoint(path, ck);
}

// A run directory: one full-precision epoch (stage 1), two W4A4 epochs (stage 2), with each layer's c moving.
void write_run_dir(const TempDir& dir, layers::Module& m) {
  write_ckpt(dir.file("last.ckpt"), m);
  std::ofstream mc(dir.file("metrics.csv"));
  mc << "stage,stage_name,epoch,global_epoch,lr,train_loss,train_top1,val_loss,val_top1,val_top5,test_loss,"
        "test_top1,test_top5,img_per_s,wall_s\n"
     << "1,fp32,1,1,0.1,1.5,40,1.2,55.5,90,1.3,54.25,89,100,10\n"
     << "2,w4a4,1,2,0.01,1.0,60,0.9,66.5,95,0.95,65.75,94,50,30\n"
     << "2,w4a4,2,3,0.001,0.8,70,0.7,71.5,97,0.75,70.25,96,50,50\n";
  std::ofstream ij(dir.file("intervals.jsonl"));
  for (int epoch = 1; epoch <= 2; ++epoch)
    for (auto r : layers::quant_report(m)) {
      r.weight.c *= 1.0 + 0.1 * epoch;
      nlohmann::json j = layer_report_json(r);
      j["stage"] = 2;
      j["stage_name"] = "w4a4";
      j["epoch"] = epoch;
      ij << j.dump() << "\n";
    }
}

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

std::string fmt4(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

// Every element opened is closed in order (HTML's void elements aside): the SVG is well-formed.
void check_balanced_tags(const std::string& html) {
  markuptest::check_balanced(html, {"meta", "br", "hr", "img", "link", "input"});
}

void check_self_contained(const std::string& html) {
  CHECK(html.find("http") == std::string::npos);
  CHECK(html.find("src=") == std::string::npos);
  CHECK(html.find("href=\"/") == std::string::npos);
  CHECK(html.find("@import") == std::string::npos);
  for (size_t p = html.find("url("); p != std::string::npos; p = html.find("url(", p + 4))
    CHECK_MESSAGE(html.compare(p, 5, "url(#") == 0, "external url() at ", p);
  for (size_t p = html.find("href=\""); p != std::string::npos; p = html.find("href=\"", p + 6))
    CHECK_MESSAGE(html.compare(p, 7, "href=\"#") == 0, "link that leaves the page at ", p);
}

}  // namespace

TEST_CASE("history readers: metrics by header name, interval records placed on global epochs") {
  TempDir dir;
  auto m = tiny_quantized_model();
  write_run_dir(dir, *m);
  const auto metrics = read_metrics_csv(dir.file("metrics.csv"));
  REQUIRE(metrics.size() == 3);
  CHECK(metrics[1].stage == 2);
  CHECK(metrics[1].stage_name == "w4a4");
  CHECK(metrics[2].global_epoch == 3);
  CHECK(metrics[2].val_top1 == doctest::Approx(71.5));
  CHECK(metrics[2].test_top5 == doctest::Approx(96));

  const auto recs = read_intervals_jsonl(dir.file("intervals.jsonl"), metrics);
  const size_t layers_n = layers::quant_report(*m).size();
  REQUIRE(layers_n == 2);  // conv2, fc1
  REQUIRE(recs.size() == 2 * layers_n);
  CHECK(recs.front().global_epoch == 2);  // stage 2 epoch 1 is the run's second epoch
  CHECK(recs.back().global_epoch == 3);
  // Without metrics the records are numbered by their (stage, epoch) order.
  const auto bare = read_intervals_jsonl(dir.file("intervals.jsonl"), {});
  CHECK(bare.front().global_epoch == 1);
  CHECK(bare.back().global_epoch == 2);

  std::ofstream(dir.file("bad.csv")) << "stage,epoch\n1,2,3\n";
  CHECK_THROWS_WITH_AS(read_metrics_csv(dir.file("bad.csv")), doctest::Contains("bad.csv: line 2"), engine::Error);
  std::ofstream(dir.file("bad.jsonl")) << "{\"layer\":\"a\"}\nnot json\n";
  CHECK_THROWS_WITH_AS(read_intervals_jsonl(dir.file("bad.jsonl"), {}), doctest::Contains("bad.jsonl: line 2"),
                       engine::Error);
}

TEST_CASE("metrics.csv reader: CRLF lines, unknown and missing columns, bad numbers and files are named") {
  TempDir dir;
  std::ofstream(dir.file("crlf.csv"), std::ios::binary)
      << "stage,stage_name,epoch,future_column,val_top1\r\n1,fp32,1,x,55.5\r\n\r\n2,w4a4,1,,-nan\r\n";
  const auto rows = read_metrics_csv(dir.file("crlf.csv"));
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].stage_name == "fp32");  // no '\r' left on the last field either
  CHECK(rows[0].val_top1 == doctest::Approx(55.5));
  CHECK(rows[0].global_epoch == 0);     // a column the file does not have stays 0
  CHECK(rows[1].stage == 2);
  CHECK(std::isnan(rows[1].val_top1));  // what printf writes for a NaN loss or accuracy
  std::ofstream(dir.file("junk.csv")) << "stage,epoch,val_top1\n1,1,50\n1,2,61.5%\n";
  CHECK_THROWS_WITH_AS(read_metrics_csv(dir.file("junk.csv")),
                       doctest::Contains("junk.csv: line 3: column 'val_top1' is not a number: '61.5%'"), engine::Error);
  std::ofstream(dir.file("empty.csv")) << "";
  CHECK_THROWS_WITH_AS(read_metrics_csv(dir.file("empty.csv")), doctest::Contains("empty.csv: empty file"), engine::Error);
  CHECK_THROWS_WITH_AS(read_metrics_csv(dir.file("none.csv")), doctest::Contains("none.csv"), engine::Error);
}

TEST_CASE("HTML report of a run directory: every quantized layer, its numbers, well-formed SVG, self-contained") {
  TempDir dir;
  auto m = tiny_quantized_model();
  write_run_dir(dir, *m);
  const InspectData in = load_inspect_data(dir.path);
  CHECK(in.metrics.size() == 3);
  CHECK(in.intervals.size() == 4);
  REQUIRE(in.reports.size() == 2);
  const std::string html = html_report(in);

  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  for (const auto& r : in.reports) {
    CHECK_MESSAGE(count(html, "id=\"layer-" + r.name + "\"") == 1, r.name);
    CHECK(in.weights.at(r.name).size() > 0);
    // The threshold numbers appear as printed in the layer's table.
    for (double v : {r.weight.prune_threshold, r.weight.clip_threshold, r.activation.prune_threshold,
                     r.activation.clip_threshold, r.weight.c, r.activation.d})
      CHECK_MESSAGE(html.find(">" + fmt4(v) + "<") != std::string::npos, r.name, " ", fmt4(v));
  }
  // Charts: accuracy; per layer a weight histogram and two interval histories.
  CHECK(count(html, "<svg") == 1 + 3 * static_cast<int>(in.reports.size()));
  CHECK(count(html, "<svg") == count(html, "</svg>"));
  CHECK(count(html, "class=\"bar\"") == 80 * static_cast<int>(in.reports.size()));
  CHECK(html.find("71.50%") != std::string::npos);  // final val top-1 from metrics.csv
  CHECK(html.find("FP32") != std::string::npos);     // stage bands
  CHECK(html.find("w4a4") != std::string::npos);
  CHECK(html.find("<script src") == std::string::npos);
  check_balanced_tags(html);
  check_self_contained(html);
}

TEST_CASE("HTML report of a bare checkpoint: final panels only") {
  TempDir dir;
  auto m = tiny_quantized_model();
  write_ckpt(dir.file("model.ckpt"), *m);
  const InspectData in = load_inspect_data(dir.file("model.ckpt"));
  CHECK(in.run_dir.empty());
  CHECK(in.metrics.empty());
  CHECK(in.intervals.empty());
  const std::string html = html_report(in);
  CHECK(html.find("no training history") != std::string::npos);
  CHECK(count(html, "<svg") == static_cast<int>(in.reports.size()));  // one weight histogram per layer
  for (const auto& r : in.reports) CHECK(count(html, "id=\"layer-" + r.name + "\"") == 1);
  check_balanced_tags(html);
  check_self_contained(html);
}

TEST_CASE("HTML report of a full-precision run says there is nothing quantized") {
  TempDir dir;
  auto m = layers::build_model("lenet", kSpec);
  write_ckpt(dir.file("last.ckpt"), *m);
  std::ofstream(dir.file("metrics.csv"))
      << "stage,stage_name,epoch,global_epoch,val_top1,test_top1,test_top5\n1,fp32,1,1,50,49,90\n1,fp32,2,2,60,59,95\n";
  const InspectData in = load_inspect_data(dir.path);
  CHECK(in.reports.empty());
  const std::string html = html_report(in);
  CHECK(html.find("no quantized layer") != std::string::npos);
  CHECK(count(html, "<svg") == 1);  // the accuracy chart alone
  check_balanced_tags(html);
  check_self_contained(html);
}

TEST_CASE("inspect JSON round-trips field by field") {
  auto m = tiny_quantized_model(/*first_last_8bit=*/true);  // also a signed input quantizer (conv1)
  auto reports = layers::quant_report(*m);
  REQUIRE(reports.size() == 4);
  // A report with a full-precision side and parameter-only stats (no fractions).
  layers::LayerReport extra = reports[1];
  extra.name = "synthetic";
  extra.spec.abits = 32;
  extra.activation = quant::QuantStats{};
  extra.weight.pruned_fraction = extra.weight.clipped_fraction = -1;
  extra.weight.levels_used = -1;
  reports.push_back(extra);
  for (const auto& r : reports) {
    // Through text, as `qil inspect --json` prints it and intervals.jsonl stores it.
    const auto b = layer_report_from_json(nlohmann::json::parse(layer_report_json(r).dump()));
    CAPTURE(r.name);
    CHECK(b.name == r.name);
    CHECK(b.type == r.type);
    CHECK(b.spec.wbits == r.spec.wbits);
    CHECK(b.spec.abits == r.spec.abits);
    CHECK(b.out_scale == r.out_scale);
    for (auto [x, y] : {std::pair{&r.weight, &b.weight}, std::pair{&r.activation, &b.activation}}) {
      CHECK(y->kind == x->kind);
      CHECK(y->bits == x->bits);
      CHECK(y->levels_total == x->levels_total);
      CHECK(y->c == x->c);
      CHECK(y->d == x->d);
      CHECK(y->gamma == x->gamma);
      CHECK(y->prune_threshold == x->prune_threshold);
      CHECK(y->clip_threshold == x->clip_threshold);
      CHECK(y->pruned_fraction == x->pruned_fraction);
      CHECK(y->clipped_fraction == x->clipped_fraction);
      CHECK(y->levels_used == x->levels_used);
    }
  }
}

TEST_CASE("activation statistics: shares of the input zeroed and saturated by the quantizer") {
  // conv1 at 8 bits sees the images themselves, so its shares can be counted directly from the data.
  auto m = tiny_quantized_model(/*first_last_8bit=*/true);
  auto ds = std::make_shared<RampDataset>(24, 8);
  const auto stats = activation_stats(*m, ds, 2, 8);  // 16 images
  REQUIRE(stats.size() == 4);
  CHECK(stats[0].layer == "conv1");
  CHECK(stats[0].values == 16 * 64);
  CHECK(stats[0].batches == 2);
  const quant::QuantStats a = layers::quant_report(*m)[0].activation;
  REQUIRE(a.kind == "qil_activation_signed");  // symmetric rule: thresholds on |x|
  int64_t zeroed = 0, saturated = 0;
  double sum = 0, mx = -1e30;
  std::vector<float> img(64);
  engine::Generator rng(0);
  for (int64_t i = 0; i < 16; ++i) {
    ds->get(i, img.data(), rng);
    for (float v : img) {
      zeroed += std::abs(v) < a.prune_threshold;
      saturated += std::abs(v) >= a.clip_threshold;
      sum += v;
      mx = std::max(mx, static_cast<double>(v));
    }
  }
  REQUIRE(saturated > 0);  // the 99.9th percentile interval leaves the largest values clipped
  REQUIRE(zeroed > 0);
  // At most one value may sit within float rounding of a threshold.
  CHECK(std::abs(stats[0].zeroed_fraction - zeroed / 1024.0) <= 1.5 / 1024);
  CHECK(std::abs(stats[0].saturated_fraction - saturated / 1024.0) <= 1.5 / 1024);
  CHECK(stats[0].mean == doctest::Approx(sum / 1024.0));
  CHECK(stats[0].max == doctest::Approx(mx));
  int64_t in_hist = 0;
  for (int64_t h : stats[0].hist) in_hist += h;
  CHECK(in_hist == stats[0].values);
  CHECK(stats[0].hist_lo == -stats[0].hist_hi);  // signed input: a symmetric range
  CHECK(stats[1].hist_lo == 0);
  for (const auto& s : stats) {
    CHECK(s.values > 0);
    CHECK(s.zeroed_fraction >= 0);
    CHECK(s.zeroed_fraction + s.saturated_fraction <= 1.0);
  }
  // The hooks are gone afterwards: another forward does not change the numbers.
  const auto again = activation_stats(*m, ds, 2, 8);
  CHECK(again[0].values == stats[0].values);

  // In the report: one input histogram per measured layer, and the shares in the tables.
  TempDir dir;
  write_ckpt(dir.file("m.ckpt"), *m);
  InspectData in = load_inspect_data(dir.file("m.ckpt"));
  const int charts_before = count(html_report(in), "<svg");
  in.activations = stats;
  in.data_name = "ramps";
  const std::string html = html_report(in);
  CHECK(count(html, "<svg") == charts_before + 4);
  CHECK(count(html, "Inputs (") == 4);
  char share[32];
  std::snprintf(share, sizeof share, "%.2f%%", 100 * stats[0].zeroed_fraction);
  CHECK(html.find(share) != std::string::npos);
  check_balanced_tags(html);
  check_self_contained(html);
}

TEST_CASE("inspecting something that is not a checkpoint names it") {
  TempDir dir;
  std::ofstream(dir.file("notes.txt")) << "these are not the weights you are looking for\n";
  const std::string expected = dir.file("notes.txt") + "' is not a readable model checkpoint";
  CHECK_THROWS_WITH_AS(load_inspect_data(dir.file("notes.txt")), doctest::Contains(expected.c_str()), engine::Error);
  CHECK_THROWS_WITH_AS(load_inspect_data(dir.file("missing.ckpt")), doctest::Contains("missing.ckpt"), engine::Error);
  // A folder with neither last.ckpt nor a run's records is not a run directory.
  CHECK_THROWS_WITH_AS(load_inspect_data(dir.path), doctest::Contains("has neither last.ckpt nor intervals.jsonl"),
                       engine::Error);
  // Records without a single layer record are refused naming the file.
  std::ofstream(dir.file("intervals.jsonl")) << "\n";
  CHECK_THROWS_WITH_AS(load_inspect_data(dir.path), doctest::Contains("intervals.jsonl holds no layer record"),
                       engine::Error);
}

TEST_CASE("qil inspect on the command line: --html writes the page, --json prints records, bad files fail") {
  const std::string bin = testpaths::qil_binary();
  TempDir dir;
  auto m = tiny_quantized_model();
  write_run_dir(dir, *m);
  const std::string q = "'" + bin + "' inspect ";
  const std::string page = dir.file("report.html");
  REQUIRE(std::system((q + "'" + dir.path + "' --html '" + page + "' 2>/dev/null").c_str()) == 0);
  std::ifstream f(page);
  const std::string html((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  CHECK(count(html, "<section class=\"layer\"") == 2);

  REQUIRE(std::system((q + "'" + dir.path + "' --json > '" + dir.file("out.json") + "'").c_str()) == 0);
  std::ifstream jf(dir.file("out.json"));
  const nlohmann::json j = nlohmann::json::parse(jf);
  REQUIRE(j.size() == 2);
  CHECK(j[0]["layer"] == "conv2");
  CHECK(!j[0].contains("input_stats"));

  std::ofstream(dir.file("notes.txt")) << "plain text\n";
  const int rc = std::system((q + "'" + dir.file("notes.txt") + "' 2> '" + dir.file("err.txt") + "'").c_str());
  CHECK(rc != 0);
  std::ifstream ef(dir.file("err.txt"));
  const std::string err((std::istreambuf_iterator<char>(ef)), std::istreambuf_iterator<char>());
  CHECK(err.find(dir.file("notes.txt")) != std::string::npos);
  CHECK(err.find("not a readable model checkpoint") != std::string::npos);
}
