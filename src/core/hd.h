#pragma once
// KILN_HD: a function the host reference and the CUDA kernels share (one definition of the math).
#if defined(__CUDACC__)
#define KILN_HD __host__ __device__ __forceinline__
#else
#define KILN_HD inline
#endif
