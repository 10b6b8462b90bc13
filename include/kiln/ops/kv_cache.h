#pragma once
// Writing a step's keys and values into a paged KV cache (the vLLM/Kestrel layout).
//
// k, v: [T, Hkv, D] of bf16 or f16, the [Hkv, D] of each token contiguous, tokens strided freely.
// key_cache, value_cache: [num_blocks, block_size, Hkv, D], contiguous, of k's dtype or f8e4m3.
// slot_mapping: int32 or int64 [T]: token t goes to slot s = block * block_size + offset.
// A negative slot skips the token (padding). A slot >= num_blocks * block_size is never written
// and is counted into bad_slots (int32 [1] on the device; the caller zeroes and reads it), or not
// counted when bad_slots is absent (a default TensorView): still never written.
// kv_scale: f32 [1] (per tensor) or [Hkv] (per head), required for e4m3 caches and absent
// otherwise: the cache holds x / scale, rounded to nearest and saturated to +-448 (NaN stays NaN).
#include "kiln/core/core.h"

namespace kiln {

void kv_cache_write(const TensorView& key_cache, const TensorView& value_cache, const TensorView& k,
                    const TensorView& v, const TensorView& slot_mapping, const TensorView& kv_scale,
                    const TensorView& bad_slots, Stream stream = nullptr);

}  // namespace kiln
