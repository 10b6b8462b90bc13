#include "buffer.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "core/element.h"
#include "kiln/core/error.h"
#if KILN_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace kiln::bench {
namespace {

#if KILN_WITH_CUDA
void ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("bench: ") + what + ": " + cudaGetErrorString(e));
}
#endif

}  // namespace

Buffer::Buffer(const Device& device, size_t bytes) : device_(device), bytes_(bytes) {
  if (bytes == 0) return;
  if (device.is_cpu()) {
    data_ = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (!data_) throw Error("bench: host allocation failed");
    return;
  }
#if KILN_WITH_CUDA
  ok(cudaMalloc(&data_, bytes), "cudaMalloc");
#else
  throw Error("bench: CUDA device requested in a build without CUDA");
#endif
}

Buffer::Buffer(Buffer&& o) noexcept
    : device_(o.device_), data_(std::exchange(o.data_, nullptr)), bytes_(o.bytes_) {}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  std::swap(device_, o.device_);
  std::swap(data_, o.data_);
  std::swap(bytes_, o.bytes_);
  return *this;
}

Buffer::~Buffer() {
  if (!data_) return;
  if (device_.is_cpu()) {
    std::free(data_);
  } else {
#if KILN_WITH_CUDA
    cudaFree(data_);
#endif
  }
}

void Buffer::upload(const void* host, size_t bytes, size_t offset) {
  char* dst = static_cast<char*>(data_) + offset;
  if (device_.is_cpu()) {
    std::memcpy(dst, host, bytes);
    return;
  }
#if KILN_WITH_CUDA
  ok(cudaMemcpy(dst, host, bytes, cudaMemcpyHostToDevice), "upload");
#endif
}

void Buffer::download(void* host, size_t bytes, size_t offset) const {
  const char* src = static_cast<const char*>(data_) + offset;
  if (device_.is_cpu()) {
    std::memcpy(host, src, bytes);
    return;
  }
#if KILN_WITH_CUDA
  ok(cudaMemcpy(host, src, bytes, cudaMemcpyDeviceToHost), "download");
#endif
}

void Buffer::fill_nan() {
  if (device_.is_cpu()) {
    std::memset(data_, 0xFF, bytes_);
    return;
  }
#if KILN_WITH_CUDA
  ok(cudaMemset(data_, 0xFF, bytes_), "memset");
#endif
}

void synchronize(const Device& device) {
#if KILN_WITH_CUDA
  if (device.is_cuda()) ok(cudaDeviceSynchronize(), "synchronize");
#else
  (void)device;
#endif
}

std::string compare(const Buffer& got, const Buffer& want, DType dtype, double tol,
                    const std::string& what) {
  std::vector<uint8_t> g(got.bytes()), w(want.bytes());
  got.download(g.data(), g.size());
  want.download(w.data(), w.size());
  double num = 0, den = 0;
  const int64_t n = static_cast<int64_t>(g.size() / dtype_size(dtype));
  for (int64_t i = 0; i < n; ++i) {
    const double a = element::load(g.data(), dtype, i), b = element::load(w.data(), dtype, i);
    if (std::isnan(a)) return what + " has NaN";
    num += (a - b) * (a - b);
    den += b * b;
  }
  const double err = std::sqrt(num / std::max(den, 1e-30));
  return err <= tol ? "" : what + " rel. error " + std::to_string(err);
}

std::string compare_exact(const Buffer& got, const Buffer& want, const std::string& what) {
  std::vector<uint8_t> g(got.bytes()), w(want.bytes());
  got.download(g.data(), g.size());
  want.download(w.data(), w.size());
  return g == w ? "" : what + " differ from the reference";
}

}  // namespace kiln::bench
