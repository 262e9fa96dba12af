// Fused softmax cross-entropy (mean over the batch, optional label smoothing) and top-k counting.
#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace engine::ops {

namespace {
void check_logits(const char* op, const Tensor& logits, const Tensor& labels) {
  QIL_CHECK(logits.defined() && logits.dim() == 2, op, ": logits must be (N, K), got ", logits.shape());
  QIL_CHECK(labels.defined() && labels.dtype() == DType::s32 && labels.dim() == 1, op,
            ": labels must be an s32 vector, got ", labels);
  QIL_CHECK(labels.size(0) == logits.size(0), op, ": ", labels.size(0), " labels for ", logits.size(0),
            " rows of logits ", logits.shape());
  const int32_t* lp = labels.data<int32_t>();
  const int64_t k = logits.size(1);
  for (int64_t i = 0; i < labels.size(0); ++i)
    QIL_CHECK(lp[i] >= 0 && lp[i] < k, op, ": label ", lp[i], " at row ", i, " outside [0, ", k, ")");
}
}  // namespace

Tensor softmax_cross_entropy(const Tensor& logits, const Tensor& labels, float label_smoothing) {
  OpTimer timer("softmax_cross_entropy");
  check_logits("softmax_cross_entropy", logits, labels);
  QIL_CHECK(label_smoothing >= 0.f && label_smoothing < 1.f,
            "softmax_cross_entropy: label smoothing must be in [0, 1), got ", label_smoothing);
  const int64_t n = logits.size(0), k = logits.size(1);
  QIL_CHECK(n > 0, "softmax_cross_entropy: empty batch");
  Tensor prob = Tensor::empty({n, k});  // (N, K) softmax, kept for backward
  const float* lp = logits.data();
  const int32_t* yp = labels.data<int32_t>();
  float* pp = prob.data();
  const float eps = label_smoothing;
  double loss = 0.0;
#pragma omp parallel for reduction(+ : loss) if (n * k > 16384)
  for (int64_t i = 0; i < n; ++i) {
    const float* row = lp + i * k;
    float mx = row[0];
    for (int64_t j = 1; j < k; ++j) mx = std::max(mx, row[j]);
    double z = 0.0;
    for (int64_t j = 0; j < k; ++j) z += std::exp(static_cast<double>(row[j] - mx));
    const double logz = std::log(z) + mx;
    double li = 0.0;  // -sum_j target_j * log p_j
    for (int64_t j = 0; j < k; ++j) {
      const double logp = row[j] - logz;
      pp[i * k + j] = static_cast<float>(std::exp(logp));
      const double t = (j == yp[i] ? 1.0 - eps : 0.0) + eps / k;
      li -= t * logp;
    }
    loss += li;
  }
  Tensor y = Tensor::scalar(static_cast<float>(loss / n));
  return record("softmax_cross_entropy", y, {logits},
                [prob, lab = labels, eps](const Tensor& gy, std::vector<Tensor>& gx) {
                  OpTimer timer("softmax_cross_entropy.bwd");
                  const int64_t n = prob.size(0), k = prob.size(1);
                  const float scale = gy.item() / n;
                  const float* pp = prob.data();
                  const int32_t* yp = lab.data<int32_t>();
                  float* dx = gx[0].data();
                  for (int64_t i = 0; i < n; ++i)
                    for (int64_t j = 0; j < k; ++j) {
                      const float t = (j == yp[i] ? 1.f - eps : 0.f) + eps / k;
                      dx[i * k + j] += scale * (pp[i * k + j] - t);
                    }
                });
}

int64_t topk_correct(const Tensor& logits, const Tensor& labels, int64_t k) {
  OpTimer timer("topk_correct");
  check_logits("topk_correct", logits, labels);
  const int64_t n = logits.size(0), kk = logits.size(1);
  QIL_CHECK(k >= 1, "topk_correct: k must be >= 1, got ", k);
  const float* lp = logits.data();
  const int32_t* yp = labels.data<int32_t>();
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = lp[i * kk + yp[i]];
    // Rank = how many classes score strictly higher; ties resolve in the label's favour only when earlier.
    int64_t higher = 0;
    for (int64_t j = 0; j < kk; ++j) {
      const float u = lp[i * kk + j];
      if (u > v || (u == v && j < yp[i])) ++higher;
    }
    if (higher < k) ++correct;
  }
  return correct;
}

}  // namespace engine::ops
