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

namespace {
// Mean over rows of -sum_j t_ij log softmax(z_i)_j for dense targets t (N, K); gradient (p - t) / N to z.
Tensor cross_entropy_dense(const char* op, const Tensor& logits, Tensor targets) {
  const int64_t n = logits.size(0), k = logits.size(1);
  QIL_CHECK(n > 0, op, ": empty batch");
  Tensor prob = Tensor::empty({n, k});  // (N, K) softmax, kept for backward
  const float* lp = logits.data();
  const float* tp = targets.data();
  float* pp = prob.data();
  double loss = 0.0;
#pragma omp parallel for reduction(+ : loss) if (n * k > 16384)
  for (int64_t i = 0; i < n; ++i) {
    const float* row = lp + i * k;
    float mx = row[0];
    for (int64_t j = 1; j < k; ++j) mx = std::max(mx, row[j]);
    double z = 0.0;
    for (int64_t j = 0; j < k; ++j) z += std::exp(static_cast<double>(row[j] - mx));
    const double logz = std::log(z) + mx;
    double li = 0.0;
    for (int64_t j = 0; j < k; ++j) {
      const double logp = row[j] - logz;
      pp[i * k + j] = static_cast<float>(std::exp(logp));
      li -= tp[i * k + j] * logp;
    }
    loss += li;
  }
  Tensor y = Tensor::scalar(static_cast<float>(loss / n));
  return record(op, y, {logits}, [prob, targets](const Tensor& gy, std::vector<Tensor>& gx) {
    OpTimer timer("softmax_cross_entropy.bwd");
    const int64_t n = prob.size(0), k = prob.size(1);
    const float scale = gy.item() / n;
    const float* pp = prob.data();
    const float* tp = targets.data();
    float* dx = gx[0].data();
    for (int64_t i = 0; i < n * k; ++i) dx[i] += scale * (pp[i] - tp[i]);
  });
}
}  // namespace

Tensor softmax_cross_entropy(const Tensor& logits, const Tensor& labels, float label_smoothing) {
  OpTimer timer("softmax_cross_entropy");
  check_logits("softmax_cross_entropy", logits, labels);
  QIL_CHECK(label_smoothing >= 0.f && label_smoothing < 1.f,
            "softmax_cross_entropy: label smoothing must be in [0, 1), got ", label_smoothing);
  const int64_t n = logits.size(0), k = logits.size(1);
  // The target: (1 - eps) one-hot + eps / K uniform.
  Tensor t = Tensor::full({n, k}, label_smoothing / k);
  const int32_t* yp = labels.data<int32_t>();
  for (int64_t i = 0; i < n; ++i) t.data()[i * k + yp[i]] += 1.f - label_smoothing;
  return cross_entropy_dense("softmax_cross_entropy", logits, t);
}

Tensor soft_cross_entropy(const Tensor& logits, const Tensor& targets) {
  OpTimer timer("softmax_cross_entropy");
  QIL_CHECK(logits.defined() && logits.dim() == 2, "soft_cross_entropy: logits must be (N, K), got ", logits.shape());
  QIL_CHECK(targets.defined() && targets.shape() == logits.shape() && targets.dtype() == DType::f32,
            "soft_cross_entropy: targets ", targets, " must match logits ", logits.shape());
  return cross_entropy_dense("soft_cross_entropy", logits, targets.detach());
}

Tensor softmax(const Tensor& logits) {
  QIL_CHECK(logits.defined() && logits.dim() == 2, "softmax: logits must be (N, K), got ", logits.shape());
  const int64_t n = logits.size(0), k = logits.size(1);
  Tensor p = Tensor::empty({n, k});
  const float* lp = logits.data();
  float* pp = p.data();
  for (int64_t i = 0; i < n; ++i) {
    const float* row = lp + i * k;
    const float mx = *std::max_element(row, row + k);
    double z = 0.0;
    for (int64_t j = 0; j < k; ++j) z += std::exp(static_cast<double>(row[j] - mx));
    for (int64_t j = 0; j < k; ++j) pp[i * k + j] = static_cast<float>(std::exp(row[j] - mx) / z);
  }
  return p;
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
