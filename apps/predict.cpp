// qil predict.
#include "apps/predict.h"

#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "apps/limits.h"
#include "apps/machine.h"
#include "apps/npy.h"
#include "engine/autograd.h"
#include "engine/check.h"

namespace apps {

using engine::Tensor;

void add_predict_flags(CLI::App& app, PredictOptions& o) {
  app.add_option("checkpoint", o.checkpoint,
                 kCheckpointArgHelp)
      ->required();
  app.add_option("--input", o.input,
                 ".npy float32 (N, C, H, W), already normalized: images made as the checkpoint records (side, "
                 "resize and center crop, mean and std: qil inspect CHECKPOINT prints them)")->required();
  app.add_option("--output", o.output, ".npy float32 logits (N, classes) to write")->required();
  app.add_option("--batch", o.batch, "images per forward pass")->capture_default_str();
  add_threads_flag(app, o.threads);
  add_model_file_flags(app, o.file);
  app.add_flag("--int8", o.int8, kInt8FlagHelp);
  add_precision_flag(app, o.precision);
}

Tensor predict_logits(layers::Module& model, const layers::ModelSpec& spec, const Tensor& x, int64_t batch,
                      const std::string& where) {
  QIL_CHECK(batch >= 1, "predict: --batch must be at least 1, got ", batch);
  const engine::Shape want{spec.in_channels, spec.image_size, spec.image_size};
  QIL_CHECK(x.dim() == 4 && engine::Shape(x.shape().begin() + 1, x.shape().end()) == want, where,
            ": shape ", x.shape(), " does not match the network's input (N, ", want[0], ", ", want[1], ", ", want[2],
            ")");
  const int64_t n = x.size(0), per_image = x.numel() / std::max<int64_t>(n, 1);
  QIL_CHECK(n >= 1, where, ": holds no images (shape ", x.shape(), ")");
  Tensor logits = Tensor::empty({n, spec.num_classes});  // (N, K)
  engine::NoGradGuard ng;
  const bool was_training = model.is_training();
  model.eval();
  for (int64_t i0 = 0; i0 < n; i0 += batch) {
    const int64_t b = std::min(batch, n - i0);
    Tensor xb = Tensor::empty({b, want[0], want[1], want[2]});  // (b, C, H, W)
    std::memcpy(xb.data(), x.data() + i0 * per_image, static_cast<size_t>(b * per_image) * sizeof(float));
    const std::vector<float> y = model.forward(xb).to_vector();
    QIL_CHECK(static_cast<int64_t>(y.size()) == b * spec.num_classes, "predict: the network returned ", y.size(),
              " values for ", b, " images, expected ", b, " x ", spec.num_classes);
    std::memcpy(logits.data() + i0 * spec.num_classes, y.data(), y.size() * sizeof(float));
  }
  model.train(was_training);
  return logits;
}

int run_predict(const PredictOptions& o) {
  if (o.threads > 0) omp_set_num_threads(static_cast<int>(o.threads));
  engine::check_output_file(o.output, {{"file", o.input}, {"checkpoint", o.checkpoint}}, "--output");
  layers::LoadedModel lm = load_model_file(o.checkpoint, o.file, false);
  if (o.int8) enable_int8_inference(*lm.model, o.checkpoint);
  const Tensor x = read_npy(o.input);
  const Tensor y = predict_logits(*lm.model, lm.meta.spec, x, o.batch, o.input);
  // The logits are written whatever they hold (a caller may want to see them), but a non-finite input or
  // logit is said on stderr: exit 0 alone would hide it. (A NaN image does not always give NaN logits:
  // ReLU and max pooling may drop NaNs, leaving finite logits that mean nothing.)
  const auto bad_rows = [](const Tensor& t, int64_t* values) {
    const std::vector<float> v = t.to_vector();
    const int64_t per = t.numel() / std::max<int64_t>(t.size(0), 1);
    std::vector<int64_t> rows;
    *values = 0;
    for (size_t i = 0; i < v.size(); ++i)
      if (!std::isfinite(v[i])) {
        ++*values;
        if (rows.empty() || rows.back() != static_cast<int64_t>(i) / per) rows.push_back(static_cast<int64_t>(i) / per);
      }
    std::string list;
    for (size_t i = 0; i < rows.size() && i < 8; ++i) list += (i ? ", " : "") + std::to_string(rows[i]);
    if (rows.size() > 8) list += ", ...";
    return std::make_pair(rows.size(), list);
  };
  int64_t bad_x = 0, bad_y = 0;
  const auto [images_x, list_x] = bad_rows(x, &bad_x);
  const auto [images_y, list_y] = bad_rows(y, &bad_y);
  if (bad_x)
    std::fprintf(stderr, "predict: warning: %s holds %lld non-finite values, in %zu images (%s); their logits "
                 "mean nothing\n", o.input.c_str(), static_cast<long long>(bad_x), images_x, list_x.c_str());
  if (bad_y)
    std::fprintf(stderr, "predict: warning: %lld logits of %zu images are not finite (images %s)\n",
                 static_cast<long long>(bad_y), images_y, list_y.c_str());
  write_npy(o.output, y);
  std::printf("%s: logits (%lld, %lld) of %s written to %s\n", o.checkpoint.c_str(), static_cast<long long>(y.size(0)),
              static_cast<long long>(y.size(1)), o.input.c_str(), o.output.c_str());
  return 0;
}

}  // namespace apps
