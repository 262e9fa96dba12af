// Tensor storage, metadata and the backward walk's entry point.
#include "engine/tensor.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ostream>

#include "engine/autograd.h"

namespace engine {

struct Tensor::Impl {
  std::shared_ptr<Storage> storage;
  size_t offset = 0;  // bytes into storage
  Shape shape;
  int64_t numel = 0;
  DType dtype = DType::f32;
  Layout layout = Layout::plain;
  bool requires_grad = false;
  Tensor grad;  // leaf gradient
  std::shared_ptr<Node> grad_fn;
};

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: case DType::s32: return 4;
    case DType::bf16: return 2;
    case DType::s8: case DType::u8: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::s8: return "s8";
    case DType::u8: return "u8";
    case DType::s32: return "s32";
  }
  return "?";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    QIL_CHECK(d >= 0, "tensor: negative dimension in shape ", s);
    n *= d;
  }
  return n;
}

namespace {
std::atomic<int64_t> g_live_bytes{0}, g_peak_bytes{0};
size_t allocated(size_t b) { return b ? (b + 63) / 64 * 64 : 64; }
}  // namespace

int64_t tensor_bytes_live() { return g_live_bytes.load(std::memory_order_relaxed); }
int64_t tensor_bytes_peak() { return g_peak_bytes.load(std::memory_order_relaxed); }

Storage::Storage(size_t b) : bytes(b) {
  ptr = std::aligned_alloc(64, allocated(b));
  if (!ptr) throw Error(str_cat("tensor: out of memory allocating ", b, " bytes"));
  const int64_t live = g_live_bytes.fetch_add(static_cast<int64_t>(allocated(b)), std::memory_order_relaxed) +
                       static_cast<int64_t>(allocated(b));
  int64_t peak = g_peak_bytes.load(std::memory_order_relaxed);
  while (live > peak && !g_peak_bytes.compare_exchange_weak(peak, live, std::memory_order_relaxed)) {
  }
}
Storage::~Storage() {
  std::free(ptr);
  g_live_bytes.fetch_sub(static_cast<int64_t>(allocated(bytes)), std::memory_order_relaxed);
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Layout layout) {
  if (layout == Layout::blocked) {
    QIL_CHECK((dtype == DType::f32 || dtype == DType::u8 || dtype == DType::s8) && shape.size() == 4 &&
                  shape[1] % block_channels() == 0,
              "tensor: the blocked layout needs f32, u8 or s8 (N, C, H, W) with C a multiple of ", block_channels(),
              ", got ",
              dtype_name(dtype), " ", shape);
  }
  Tensor t;
  t.impl_ = std::make_shared<Impl>();
  t.impl_->shape = shape;
  t.impl_->numel = shape_numel(shape);
  t.impl_->dtype = dtype;
  t.impl_->layout = layout;
  t.impl_->storage = std::make_shared<Storage>(static_cast<size_t>(t.impl_->numel) * dtype_size(dtype));
  return t;
}

Tensor Tensor::empty_like(const Tensor& t) { return empty(t.shape(), t.dtype(), t.layout()); }

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::full(const Shape& shape, float value) {
  Tensor t = empty(shape);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape) {
  QIL_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "from_vector: ", v.size(),
            " values do not fill shape ", shape);
  Tensor t = empty(shape);
  std::memcpy(t.raw(), v.data(), v.size() * sizeof(float));
  return t;
}

const Shape& Tensor::shape() const {
  static const Shape no_shape;  // built on first use, not by a static initializer
  return impl_ ? impl_->shape : no_shape;
}
int64_t Tensor::numel() const { return impl_ ? impl_->numel : 0; }
DType Tensor::dtype() const { QIL_CHECK(impl_, "tensor: dtype of an undefined tensor"); return impl_->dtype; }
Layout Tensor::layout() const { QIL_CHECK(impl_, "tensor: layout of an undefined tensor"); return impl_->layout; }

int64_t Tensor::size(int64_t d) const {
  const int64_t n = dim();
  QIL_CHECK(d >= -n && d < n, "tensor: dimension ", d, " out of range for shape ", shape());
  return shape()[d < 0 ? d + n : d];
}

void* Tensor::raw() const {
  QIL_CHECK(impl_, "tensor: data of an undefined tensor");
  return static_cast<char*>(impl_->storage->ptr) + impl_->offset;
}

void Tensor::check_dtype(DType t) const {
  QIL_CHECK(impl_, "tensor: data of an undefined tensor");
  QIL_CHECK(impl_->dtype == t, "tensor: requested ", dtype_name(t), " data of a ", dtype_name(impl_->dtype),
            " tensor of shape ", impl_->shape);
}

float Tensor::item() const {
  QIL_CHECK(numel() == 1, "item: tensor of shape ", shape(), " has ", numel(), " elements, not 1");
  return *data<float>();
}

std::vector<float> Tensor::to_vector() const {
  const Tensor p = plain();
  const float* d = p.data<float>();
  return std::vector<float>(d, d + numel());
}

namespace {
// (N, C/B, H, W, B) -> (N, C, H, W) for elements of type T, B = block_channels().
template <class T>
void unblock(const T* src, T* dst, int64_t n, int64_t cb, int64_t hw) {
  const int64_t b = block_channels();
  for (int64_t i = 0; i < n * cb; ++i)
    for (int64_t k = 0; k < hw; ++k)
      for (int64_t l = 0; l < b; ++l) dst[(i * b + l) * hw + k] = src[(i * hw + k) * b + l];
}
}  // namespace

Tensor Tensor::plain() const {
  QIL_CHECK(impl_, "plain: undefined tensor");
  if (layout() == Layout::plain) return *this;
  const int64_t n = size(0), cb = size(1) / block_channels(), hw = size(2) * size(3);
  Tensor t = empty(shape(), dtype());
  if (dtype() == DType::f32) unblock(static_cast<const float*>(raw()), static_cast<float*>(t.raw()), n, cb, hw);
  else unblock(static_cast<const uint8_t*>(raw()), static_cast<uint8_t*>(t.raw()), n, cb, hw);  // u8 or s8 bytes
  return t;
}

Tensor Tensor::detach() const {
  QIL_CHECK(impl_, "detach: undefined tensor");
  Tensor t;
  t.impl_ = std::make_shared<Impl>();
  t.impl_->storage = impl_->storage;
  t.impl_->offset = impl_->offset;
  t.impl_->shape = impl_->shape;
  t.impl_->numel = impl_->numel;
  t.impl_->dtype = impl_->dtype;
  t.impl_->layout = impl_->layout;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape(), dtype(), layout());
  std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

Tensor Tensor::view(const Shape& s) const {
  QIL_CHECK(shape_numel(s) == numel(), "view: cannot view shape ", shape(), " as ", s);
  QIL_CHECK(layout() == Layout::plain || s == shape(), "view: cannot view blocked tensor ", *this, " as ", s,
            " (convert it with plain() first)");
  Tensor t = detach();
  t.impl_->shape = s;
  return t;
}

void Tensor::fill_(float v) {
  float* p = data<float>();
  const int64_t n = numel();
  for (int64_t i = 0; i < n; ++i) p[i] = v;
}

void Tensor::copy_from(const Tensor& src) {
  QIL_CHECK(src.numel() == numel() && src.dtype() == dtype(), "copy_from: source ", src, " does not match ",
            *this);
  std::memmove(raw(), src.raw(), nbytes());
}

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }
Tensor& Tensor::set_requires_grad(bool r) {
  QIL_CHECK(impl_, "set_requires_grad: undefined tensor");
  impl_->requires_grad = r;
  return *this;
}
Tensor& Tensor::grad() {
  QIL_CHECK(impl_, "grad: undefined tensor");
  return impl_->grad;
}
const Tensor& Tensor::grad() const {
  QIL_CHECK(impl_, "grad: undefined tensor");
  return impl_->grad;
}
void Tensor::zero_grad() {
  if (!impl_->grad.defined()) impl_->grad = Tensor::zeros(shape());
  else impl_->grad.fill_(0.f);
}
const std::shared_ptr<Node>& Tensor::grad_fn() const {
  static const std::shared_ptr<Node> none;
  return impl_ ? impl_->grad_fn : none;
}
void Tensor::set_grad_fn(std::shared_ptr<Node> n) {
  impl_->grad_fn = std::move(n);
  if (impl_->grad_fn) impl_->requires_grad = true;
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "Tensor[undefined]";
  return os << "Tensor[" << dtype_name(t.dtype()) << ' ' << t.shape()
            << (t.layout() == Layout::blocked ? str_cat(" nChw", block_channels(), "c") : std::string()) << ']';
}

}  // namespace engine
