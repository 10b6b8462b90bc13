#pragma once
// Hopper's copy engine (TMA, cp.async.bulk.tensor) and the shared-memory transaction barriers
// (mbarrier) its copies complete on.
//
// A producer thread arms a barrier with the bytes it expects (arrive_expect_tx) and issues the
// copies naming that barrier; consumers wait for the barrier's phase to flip (wait_parity) and
// release the buffer by arriving on an "empty" barrier the producer waits for in turn. Phases
// alternate, so a wait names the parity of the phase it waits to complete: a fresh barrier is in
// phase 0, and waiting for parity 1 returns at once (the "previous" phase counts as done) — which
// is how a producer's first wait on an empty buffer passes.
#include <cuda.h>  // CUtensorMap (a type only: the encoder is reached through the runtime)

#include <cstdint>

namespace kiln::cuda {

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void barrier_init(uint64_t* bar, int arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(bar)), "r"(arrivals)
               : "memory");
}

// Makes initialised barriers visible to the copy engine (before the CTA barrier that publishes
// them).
__device__ __forceinline__ void barrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

__device__ __forceinline__ void barrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(shared_address(bar)) : "memory");
}

// One arrival that also expects `bytes` more of copy-engine transactions in this phase.
__device__ __forceinline__ void barrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile(
      "mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_address(bar)),
      "r"(bytes)
      : "memory");
}

__device__ __forceinline__ void barrier_wait_parity(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n"
      "}\n" ::"r"(shared_address(bar)),
      "r"(parity)
      : "memory");
}

// Ordinary shared-memory stores made visible to the async proxy (wgmma, TMA) that reads next.
__device__ __forceinline__ void fence_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// Copies the box at coordinates (c0 innermost, c1, c2) of a 3-D tensor map into shared memory at
// dst (aligned as the map's swizzle needs), completing `bytes of the box` on bar. Boxes past the
// tensor's extent arrive zero-filled.
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, int c0, int c1,
                                            int c2, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(shared_address(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(shared_address(bar))
      : "memory");
}

}  // namespace kiln::cuda
