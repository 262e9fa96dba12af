// Tensor: a cheap, reference-counted handle to contiguous, 64-byte-aligned storage with a shape, a dtype
// and a layout tag, plus the autograd hooks (requires_grad, grad, the node that produced it).
// Not a strided view library: every tensor is contiguous; views alias whole storage with an offset.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "engine/check.h"

namespace engine {

using Shape = std::vector<int64_t>;

enum class DType : uint8_t { f32 = 0, bf16 = 1, s8 = 2, u8 = 3, s32 = 4 };
// Plain is row-major in shape order. Blocked is oneDNN's nChw<B>c for f32 activations (N, C, H, W) with C a
// multiple of B = block_channels() (and for their u8/s8 integer levels, quant::Quantizer::levels): memory order
// (N, C/B, H, W, B), so numel and bytes equal the plain tensor's. Only ops
// produce blocked tensors (ops::set_keep_blocked); to_vector() and plain() always see plain order.
enum class Layout : uint8_t { plain = 0, blocked = 1 };
// Channels per block of Layout::blocked: the block of oneDNN's direct convolutions on this CPU, 16 with
// AVX-512 and 8 without (AVX2: nChw8c), fixed for the process at its first call (engine/ops/layout.cpp).
int64_t block_channels();

size_t dtype_size(DType t);
const char* dtype_name(DType t);
int64_t shape_numel(const Shape& s);

struct Node;  // autograd.h

// Bytes held by every tensor storage alive in the process (allocations rounded up to 64), for memory tests and
// reports: what a graph keeps alive shows here without reading the allocator's state.
int64_t tensor_bytes_live();
// The most tensor_bytes_live() has been since the process started.
int64_t tensor_bytes_peak();

// Owns one aligned allocation.
struct Storage {
  explicit Storage(size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* ptr = nullptr;
  size_t bytes = 0;
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor: defined() == false

  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Layout layout = Layout::plain);
  static Tensor empty_like(const Tensor& t);  // same shape, dtype and layout
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32);
  static Tensor full(const Shape& shape, float value);
  static Tensor scalar(float value) { return full({}, value); }
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const;
  DType dtype() const;
  Layout layout() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }

  // Typed access; checks the dtype.
  template <class T = float> T* data();
  template <class T = float> const T* data() const;
  // Untyped bytes of any dtype (nbytes() of them), for serialization and communication.
  void* bytes() { return raw(); }
  const void* bytes() const { return raw(); }
  float item() const;  // the value of a one-element f32 tensor
  std::vector<float> to_vector() const;  // plain order whatever the layout
  // This tensor when plain, else a plain-layout copy (no autograd; see ops::to_plain for the recorded one).
  Tensor plain() const;

  // Same storage, no autograd history, requires_grad false.
  Tensor detach() const;
  // Deep copy (same layout), no autograd history.
  Tensor clone() const;
  // Same storage with another shape of equal numel (no autograd; see ops::reshape for the recorded one).
  // Plain tensors only (a blocked tensor may be viewed with its own shape).
  Tensor view(const Shape& shape) const;
  void fill_(float v);
  void copy_from(const Tensor& src);  // same numel and dtype; plain copy

  // Autograd.
  bool requires_grad() const;
  Tensor& set_requires_grad(bool r);
  Tensor& grad();  // undefined until a backward pass writes it (or zero_grad allocates)
  const Tensor& grad() const;
  void zero_grad();  // fills an existing grad with zeros (allocates one if missing)
  const std::shared_ptr<Node>& grad_fn() const;
  void set_grad_fn(std::shared_ptr<Node> n);
  // Runs backward from this one-element tensor (seed 1) or with an explicit seed gradient.
  void backward() const;
  void backward(const Tensor& seed) const;

  bool same(const Tensor& o) const { return impl_ == o.impl_; }
  const void* id() const { return impl_.get(); }

 private:
  struct Impl;  // tensor.cpp
  std::shared_ptr<Impl> impl_;
  void* raw() const;
  void check_dtype(DType t) const;
  template <class T> static DType dtype_of();
};

template <> inline DType Tensor::dtype_of<float>() { return DType::f32; }
template <> inline DType Tensor::dtype_of<uint8_t>() { return DType::u8; }
template <> inline DType Tensor::dtype_of<int8_t>() { return DType::s8; }
template <> inline DType Tensor::dtype_of<int32_t>() { return DType::s32; }
template <> inline DType Tensor::dtype_of<uint16_t>() { return DType::bf16; }

template <class T> T* Tensor::data() { check_dtype(dtype_of<T>()); return static_cast<T*>(raw()); }
template <class T> const T* Tensor::data() const { check_dtype(dtype_of<T>()); return static_cast<const T*>(raw()); }

std::ostream& operator<<(std::ostream& os, const Tensor& t);  // "Tensor[f32 (2, 3)]"

}  // namespace engine
