// `qil compare` on run directories written here with known numbers: groups by settings (seed, out and threads
// ignored), mean and sample standard deviation, paired differences with Student's t intervals worked out by
// hand below, the verdicts, stage selection, and the errors that name the file.
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "apps/compare.h"
#include "engine/check.h"
#include "run_qil.h"

using qiltest::ScratchDir;

namespace {

// A run directory: config.toml with these settings and seed, metrics.csv with one row per (stage, value).
std::string make_run(const ScratchDir& tmp, const std::string& name, const std::string& quantizer, double lr,
                     int seed, const std::vector<std::pair<std::string, double>>& rows, int threads = 2) {
  const std::string dir = tmp / name;
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.toml") << "model = 'resnet20'\nquantizer = '" << quantizer << "'\nlr = " << lr
                                      << "\nseed = " << seed << "\nthreads = " << threads << "\nout = '" << dir
                                      << "'\nstages = '2'\n";
  std::ofstream m(dir + "/metrics.csv");
  m << "stage,stage_name,epoch,global_epoch,lr,train_loss,train_top1,val_loss,val_top1,val_top5,test_loss,"
       "test_top1,test_top5,img_per_s,wall_s\n";
  int e = 0;
  for (const auto& [stage, v] : rows) {
    ++e;
    m << "1," << stage << "," << e << "," << e << ",0.01,0.3,90,0.3,90,99,0.3," << v << ",99,100,10\n";
  }
  return dir;
}

}  // namespace

TEST_CASE("t quantiles at 0.975: the table and the expansion beyond it") {
  CHECK(apps::t_quantile_975(1) == doctest::Approx(12.706));
  CHECK(apps::t_quantile_975(2) == doctest::Approx(4.303));
  CHECK(apps::t_quantile_975(30) == doctest::Approx(2.042));
  CHECK(apps::t_quantile_975(40) == doctest::Approx(2.021).epsilon(5e-4));
  CHECK(apps::t_quantile_975(120) == doctest::Approx(1.980).epsilon(5e-4));
  CHECK_THROWS_AS(apps::t_quantile_975(0), engine::Error);
}

TEST_CASE("compare: groups, mean ± sample sd, paired 95% intervals and verdicts against hand-worked numbers") {
  ScratchDir tmp;
  std::vector<apps::RunRecord> runs;
  const double qil[] = {90.0, 91.0, 92.5}, lsq[] = {90.5, 91.8, 93.1}, pact[] = {89.0, 92.0};
  for (int s = 0; s < 3; ++s)
    runs.push_back(apps::read_run(make_run(tmp, "qil" + std::to_string(s), "qil", 0.01, s, {{"w2a2", qil[s]}}, 1 + s),
                                  "test_top1", ""));
  for (int s = 0; s < 3; ++s)
    runs.push_back(apps::read_run(make_run(tmp, "lsq" + std::to_string(s), "lsq", 0.01, s, {{"w2a2", lsq[s]}}),
                                  "test_top1", ""));
  for (int s = 0; s < 2; ++s)
    runs.push_back(apps::read_run(make_run(tmp, "pact" + std::to_string(s), "pact", 0.01, s, {{"w2a2", pact[s]}}),
                                  "test_top1", ""));
  runs.push_back(apps::read_run(make_run(tmp, "lsq-lr", "lsq", 0.05, 0, {{"w2a2", 80.0}}), "test_top1", ""));
  const apps::Comparison c = apps::compare_runs(runs, "");
  REQUIRE(c.groups.size() == 4);  // threads differ among the qil runs: they still form one group
  CHECK(c.differing == std::vector<std::string>{"lr", "quantizer"});
  CHECK(c.groups[0].name == "lr=0.01 quantizer=qil");
  CHECK(c.groups[3].name == "lr=0.05 quantizer=lsq");
  // The tables' labels: the baseline by its name, the others by what differs from it alone.
  CHECK(c.groups[0].label == "lr=0.01 quantizer=qil");
  CHECK(c.groups[1].label == "quantizer=lsq");
  CHECK(c.groups[3].label == "lr=0.05 quantizer=lsq");
  // qil: mean 91.1667; squared deviations 1.3611 + 0.0278 + 1.7778 = 3.1667, / 2 -> sd 1.2583.
  CHECK(c.groups[0].mean == doctest::Approx(91.16667).epsilon(1e-6));
  CHECK(c.groups[0].sd == doctest::Approx(1.258306).epsilon(1e-5));
  CHECK(!c.groups[0].paired);
  // lsq − qil by seed: 0.5, 0.8, 0.6; mean 0.6333, sd sqrt(0.046667 / 2) = 0.152753;
  // half-width 4.303 * 0.152753 / sqrt(3) = 0.379488 -> [0.2538, 1.0128]: higher.
  const apps::PairedDiff& l = *c.groups[1].paired;
  CHECK(l.n == 3);
  CHECK(l.mean == doctest::Approx(0.633333).epsilon(1e-5));
  CHECK(l.sd == doctest::Approx(0.152753).epsilon(1e-5));
  CHECK(l.low == doctest::Approx(0.253845).epsilon(1e-4));
  CHECK(l.high == doctest::Approx(1.012821).epsilon(1e-4));
  CHECK(l.verdict == "higher");
  // pact − qil on seeds 0 and 1 only: −1, +1; mean 0, sd sqrt(2); half-width 12.706 * sqrt(2) / sqrt(2).
  const apps::PairedDiff& p = *c.groups[2].paired;
  CHECK(p.n == 2);
  CHECK(p.low == doctest::Approx(-12.706));
  CHECK(p.verdict == "no difference shown");
  CHECK(c.groups[3].paired->verdict == "n < 2");
  // Against lsq as the baseline, qil is lower by the same interval.
  const apps::Comparison b = apps::compare_runs(runs, tmp / "lsq1");
  CHECK(b.baseline == 1);
  CHECK(b.groups[0].paired->verdict == "lower");
  CHECK(b.groups[0].label == "quantizer=qil");
  CHECK(b.groups[3].label == "lr=0.05");  // lsq at another lr differs from the lsq baseline in lr only
  CHECK(b.groups[0].paired->high == doctest::Approx(-0.253845).epsilon(1e-4));
  CHECK_THROWS_WITH_AS(apps::compare_runs(runs, tmp / "nowhere"), doctest::Contains("not one of the runs"),
                       engine::Error);
}

TEST_CASE("compare: a setting a run's config lacks counts as the flag's default") {
  // Runs written before --pact-calib existed have no pact_calib key; they ran as its default, percentile, does.
  ScratchDir tmp;
  std::vector<apps::RunRecord> runs;
  for (int s = 0; s < 2; ++s)
    runs.push_back(apps::read_run(make_run(tmp, "old" + std::to_string(s), "pact", 0.01, s, {{"w2a2", 80.0 + s}}),
                                  "test_top1", ""));
  for (const char* calib : {"percentile", "mse"}) {
    const std::string dir = make_run(tmp, std::string("new-") + calib, "pact", 0.01, 2, {{"w2a2", 85.0}});
    std::ofstream(dir + "/config.toml", std::ios::app) << "pact_calib = '" << calib << "'\n";
    runs.push_back(apps::read_run(dir, "test_top1", ""));
  }
  CHECK(runs[0].settings.at("pact_calib") == "percentile");
  // --int8-forward's default is auto, which a run never records (it records what auto chose): a file without the
  // key is from a binary that ran the float forward, and groups with the runs that record false.
  CHECK(runs[0].settings.at("int8_forward") == "false");
  const apps::Comparison c = apps::compare_runs(runs, "");
  REQUIRE(c.groups.size() == 2);
  CHECK(c.groups[0].runs.size() == 3);  // the old runs and the new percentile one
  CHECK(c.differing == std::vector<std::string>{"pact_calib"});
  CHECK(c.groups[1].name == "pact_calib=mse");
}

TEST_CASE("compare: the same settings and seed twice is an error naming both runs") {
  ScratchDir tmp;
  std::vector<apps::RunRecord> runs = {
      apps::read_run(make_run(tmp, "a", "qil", 0.01, 0, {{"w2a2", 90}}), "test_top1", ""),
      apps::read_run(make_run(tmp, "b", "qil", 0.01, 0, {{"w2a2", 91}}), "test_top1", "")};
  CHECK_THROWS_WITH_AS(apps::compare_runs(runs, ""), doctest::Contains("same settings and seed 0"), engine::Error);
}

TEST_CASE("compare: --stage reads that stage's last epoch, missing stages, columns and files are named") {
  ScratchDir tmp;
  const std::string d = make_run(tmp, "prog", "qil", 0.01, 0, {{"w4a4", 92.0}, {"w4a4", 92.5}, {"w2a2", 88.0}});
  CHECK(apps::read_run(d, "test_top1", "").value == 88.0);
  CHECK(apps::read_run(d, "test_top1", "w4a4").value == 92.5);
  CHECK_THROWS_WITH_AS(apps::read_run(d, "test_top1", "w3a3"), doctest::Contains("has no stage 'w3a3'"), engine::Error);
  CHECK_THROWS_WITH_AS(apps::read_run(d, "top9", ""), doctest::Contains("no column 'top9'"), engine::Error);
  CHECK_THROWS_WITH_AS(apps::read_run(tmp / "empty", "test_top1", ""), doctest::Contains("no config.toml"),
                       engine::Error);
}

TEST_CASE("qil compare: Markdown, CSV and JSON from the command line, with the starting checkpoints named") {
  ScratchDir tmp;
  std::string dirs;
  const double a[] = {90.0, 91.0, 92.5}, b[] = {90.5, 91.8, 93.1};
  for (int s = 0; s < 3; ++s) {
    dirs += " " + make_run(tmp, "q" + std::to_string(s), "qil", 0.01, s, {{"w2a2", a[s]}});
    const std::string l = make_run(tmp, "l" + std::to_string(s), "lsq", 0.01, s, {{"w2a2", b[s]}});
    std::ofstream(l + "/provenance.json") << R"({"init": {"run": "fp-s)" << s << R"(", "sha256": "0123456789abcdef"}})";
    dirs += " " + l;
  }
  const auto md = qiltest::run_qil("compare" + dirs);
  REQUIRE_MESSAGE(md.code == 0, md.out);
  CHECK(md.out.find("| quantizer=qil (baseline) | 3 | 0,1,2 | 91.17 ± 1.26 |") != std::string::npos);
  CHECK(md.out.find("| quantizer=lsq | 3 | 0,1,2 | 91.80 ± 1.30 | +0.63 (n=3) | [+0.25, +1.01] | higher |") !=
        std::string::npos);
  CHECK(md.out.find("fp-s1 sha256:0123456789ab") != std::string::npos);
  // The qil runs name no provenance: their seeds start from two different checkpoints, which is said.
  CHECK(md.out.find("not like for like") != std::string::npos);
  const auto csv = qiltest::run_qil("compare --format csv" + dirs);
  CHECK(csv.out.find("\"quantizer=lsq\",0,3,\"0,1,2\",91.8000,1.3000,3,0.6333,0.1528,0.2538,1.0128,higher") !=
        std::string::npos);
  const auto js = qiltest::run_qil("compare --json --baseline " + tmp / "l0" + dirs);
  REQUIRE_MESSAGE(js.code == 0, js.out);
  const nlohmann::json j = nlohmann::json::parse(js.out.substr(js.out.find('{')));  // after the warning line
  CHECK(j["baseline"] == "quantizer=lsq");
  CHECK(j["groups"][0]["paired"]["verdict"] == "lower");
  CHECK(j["groups"][0]["paired"]["ci_high"].get<double>() == doctest::Approx(-0.253845).epsilon(1e-4));
  const auto bad = qiltest::run_qil("compare " + tmp / "nothing");
  CHECK(bad.code != 0);
  CHECK(bad.out.find("nothing") != std::string::npos);
}
