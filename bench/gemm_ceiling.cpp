// The compute ceiling the compute-bound cases are compared with: a dense bf16 GEMM (8192^3,
// fp32 accumulation) through cuBLAS, timed like every case in the same run.
#include "harness.h"

#if KILN_WITH_CUDA
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <vector>

#include "buffer.h"
#include "core/host_random.h"
#include "kiln/core/error.h"
#endif

namespace kiln::bench {

double measure_gemm_tflops(const Device& device, int reps) {
#if KILN_WITH_CUDA
  if (!device.is_cuda()) return 0;
  constexpr int n = 8192;
  const size_t bytes = size_t{n} * n * 2;
  Buffer a(device, bytes), b(device, bytes), c(device, bytes);
  std::vector<uint16_t> host(size_t{n} * n);
  HostRandom random(11);
  random.fill(host.data(), DType::bf16, static_cast<int64_t>(host.size()));
  a.upload(host.data(), bytes);
  b.upload(host.data(), bytes);
  cublasHandle_t handle = nullptr;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS)
    throw Error("kiln bench: cublasCreate failed");
  const float one = 1.f, zero = 0.f;
  cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
  auto gemm = [&](int, Stream stream) {
    cublasSetStream(handle, static_cast<cudaStream_t>(stream));
    status = cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a.data(), CUDA_R_16BF, n,
                          b.data(), CUDA_R_16BF, n, &zero, c.data(), CUDA_R_16BF, n,
                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  };
  const double ms = time_median_ms(device, gemm, 1, 3, reps);
  cublasDestroy(handle);
  if (status != CUBLAS_STATUS_SUCCESS) throw Error("kiln bench: the ceiling GEMM failed");
  return 2.0 * n * n * static_cast<double>(n) / (ms * 1e-3) / 1e12;
#else
  (void)device;
  (void)reps;
  return 0;
#endif
}

}  // namespace kiln::bench
