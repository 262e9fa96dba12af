// Input-pipeline throughput: the loader as training uses it, timed batch by batch, epochs chained so that a
// small folder can still feed many batches.
#include "apps/bench_data.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "apps/limits.h"
#include "apps/training/evaluate.h"
#include "data/imagenet.h"
#include "data/loader.h"
#include "engine/check.h"

namespace apps {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Batches from the loader forever, starting the next epoch when one ends.
class EndlessBatches {
 public:
  EndlessBatches(std::shared_ptr<const data::Dataset> ds, data::LoaderOptions opt) : loader_(std::move(ds), opt) {
    loader_.start_epoch(epoch_);
  }
  int64_t next() {  // the batch's image count
    data::Batch b;
    while (!loader_.next(b)) loader_.start_epoch(++epoch_);
    return b.images.shape()[0];
  }

 private:
  data::Loader loader_;
  int64_t epoch_ = 0;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One thread, no loader: where the time of one sample goes.
void print_breakdown(const data::ImageFolderIndex& idx, const data::ImageNetTransform& tr, int64_t count) {
  const data::ImageFolderOptions fo;
  std::vector<float> out(static_cast<size_t>(3 * tr.size * tr.size));  // (3, size, size)
  double t_read = 0, t_decode = 0, t_transform = 0;
  int64_t pixels = 0;
  for (int64_t k = 0; k < count; ++k) {
    const data::ImageEntry& e = idx.samples[static_cast<size_t>(k) % idx.samples.size()];
    engine::Generator rng = engine::Generator::derive(7, static_cast<uint64_t>(k));
    auto t0 = Clock::now();
    const std::vector<uint8_t> bytes = data::read_file(e.path, fo.max_file_bytes);
    auto t1 = Clock::now();
    const data::RgbImage img = data::decode_image(bytes.data(), bytes.size(), e.path, fo.max_pixels);
    auto t2 = Clock::now();
    tr.apply(img, out.data(), rng);
    auto t3 = Clock::now();
    t_read += std::chrono::duration<double>(t1 - t0).count();
    t_decode += std::chrono::duration<double>(t2 - t1).count();
    t_transform += std::chrono::duration<double>(t3 - t2).count();
    pixels += img.height * img.width;
  }
  const double ms = 1000.0 / static_cast<double>(count);
  std::printf("breakdown over %lld images (%.0f kpixels each), one thread: read %.2f ms, decode %.2f ms, "
              "transform %.2f ms per image\n",
              static_cast<long long>(count), pixels / 1000.0 / count, t_read * ms, t_decode * ms, t_transform * ms);
}

}  // namespace

void add_bench_data_flags(CLI::App& app, BenchDataOptions& o) {
  app.add_option("dir", o.dir, "ImageNet-style folder (reads DIR/train/<class>/*)")->required();
  app.add_option("--image-size", o.image_size, "output side")->capture_default_str();
  add_workers_flag(app, o.workers, "decode threads");
  app.add_option("--batch", o.batch, "batch size")->capture_default_str();
  app.add_option("--batches", o.batches, "timed batches per repeat")->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed batches first")->capture_default_str();
  app.add_option("--repeat", o.repeat, "repeats (the median is reported)")->capture_default_str();
  auto* tr = app.add_flag("--train", "training transform: random-resized-crop + flip (the default)");
  app.add_flag("--eval", o.eval, "evaluation transform: resize + center crop")->excludes(tr);
  app.add_flag("--breakdown", o.breakdown, "also time read / decode / transform on one thread");
  app.add_flag("--json", o.json, "print JSON");
}

int run_bench_data(const BenchDataOptions& o) {
  QIL_CHECK(o.image_size >= 1 && o.workers >= 1 && o.batch >= 1 && o.batches >= 1 && o.repeat >= 1 && o.warmup >= 0,
            "bench-data: image-size, workers, batch, batches and repeat must be >= 1 (got ", o.image_size, ", ",
            o.workers, ", ", o.batch, ", ", o.batches, ", ", o.repeat, ")");
  namespace fs = std::filesystem;
  std::error_code ec;
  QIL_CHECK(fs::is_directory(o.dir, ec), "bench-data: ", o.dir, ": no such folder");
  const std::string train_dir = (fs::path(o.dir) / "train").string();
  QIL_CHECK(fs::is_directory(train_dir, ec), "bench-data: ", train_dir, ": no such folder (expected DIR/train/<class>/*)");
  data::ImageFolderIndex idx = data::scan_class_folders(train_dir);
  const int64_t resize = (o.image_size * 256 + 112) / 224;  // as training: 224 -> 256
  const data::ImageNetTransform tr = o.eval ? data::ImageNetTransform::eval_default(o.image_size, resize)
                                            : data::ImageNetTransform::train_default(o.image_size);
  const int64_t n_images = static_cast<int64_t>(idx.samples.size()), n_classes = static_cast<int64_t>(idx.classes.size());
  auto ds = std::make_shared<data::ImageFolderDataset>(idx, tr);

  // Training's loader settings, but a folder smaller than one batch must still deliver batches.
  data::LoaderOptions lo = training::loader_options(training::LoaderUse::train, o.batch, o.workers, 1);
  lo.drop_last = false;
  EndlessBatches batches(ds, lo);
  for (int64_t i = 0; i < o.warmup; ++i) batches.next();
  std::vector<double> rates;
  for (int64_t r = 0; r < o.repeat; ++r) {
    const auto t0 = Clock::now();
    int64_t images = 0;
    for (int64_t i = 0; i < o.batches; ++i) images += batches.next();
    rates.push_back(static_cast<double>(images) / seconds_since(t0));
  }
  const double total = median(rates), per_thread = total / static_cast<double>(o.workers);

  if (o.breakdown) print_breakdown(idx, tr, std::min<int64_t>(n_images, 64));
  if (o.json) {
    auto rate = [](double r) { return std::round(r * 1e3) / 1e3; };  // 3 decimals, as the text output's precision
    std::cout << nlohmann::ordered_json{{"dir", train_dir},
                                        {"images", n_images},
                                        {"classes", n_classes},
                                        {"transform", o.eval ? "eval" : "train"},
                                        {"image_size", o.image_size},
                                        {"workers", o.workers},
                                        {"batch", o.batch},
                                        {"img_per_s", rate(total)},
                                        {"img_per_s_per_thread", rate(per_thread)}}
                     .dump()
              << std::endl;
    return 0;
  }
  std::printf("%s: %lld images, %lld classes; %s transform @%lld, batch %lld, %lld decode threads, "
              "%lld x %lld batches\n",
              train_dir.c_str(), static_cast<long long>(n_images), static_cast<long long>(n_classes),
              o.eval ? "eval" : "train", static_cast<long long>(o.image_size), static_cast<long long>(o.batch),
              static_cast<long long>(o.workers), static_cast<long long>(o.repeat), static_cast<long long>(o.batches));
  if (ds->bad_files() > 0) std::printf("%lld undecodable files were replaced\n", static_cast<long long>(ds->bad_files()));
  std::printf("per decode thread: %.2f img/s\n", per_thread);
  std::printf("img/s=%.2f\n", total);
  return 0;
}

}  // namespace apps
