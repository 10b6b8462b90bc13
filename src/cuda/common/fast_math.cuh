#pragma once
// Single MUFU instructions for the hot loops that do not need IEEE rounding: no denormal
// handling, no slow-path branch (what --use_fast_math would make of the library calls, per call
// site instead of per file). The PTX .approx forms: a few ulp off the rounded result, which the
// callers' tests bound (the routers' weights to 2e-5 of float64).

namespace kiln::cuda {

// 2^x (ex2.approx.ftz: -inf -> 0; results below 2^-126 flush to 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// e^x as 2^(x log2 e): what __expf computes, without its denormal fix-up.
__device__ __forceinline__ float fast_exp(float x) {
  return fast_exp2(x * 1.4426950408889634f);
}

// sqrt(x) (sqrt.approx.ftz: sqrt(0) = 0, sqrt(inf) = inf).
__device__ __forceinline__ float fast_sqrt(float x) {
  float y;
  asm("sqrt.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// 1 / x (rcp.approx.ftz: 1 / inf = 0).
__device__ __forceinline__ float fast_rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace kiln::cuda
