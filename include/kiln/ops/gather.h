#pragma once
// Row gathers: KV compaction, MoE permutation, any "take these rows" step.
//
// src (and v): [N, ...] of any kiln dtype, rows along the first dim, the remaining dims contiguous
// (each row is R = prod(sizes[1:]) elements in a row of stride src.stride(0)); index: int32 or
// int64 [M] on src's device; out: [M, ...] of src's dtype and trailing shape.
// out[m] = src[index[m]]. An index outside [0, N) is never dereferenced: out[m] is zeros and the
// index is counted into bad_indices, an int32 [1] tensor on the same device that the caller zeroes
// and reads when it likes (ops never synchronise; DESIGN.md "Errors"). One count per bad index
// (a pair gather counts it once). bad_indices may be absent (a default TensorView): bad indices
// still give zero rows, uncounted, and the caller zeroes nothing (a fill kernel is ~2% of a
// 67 MB gather). out must not overlap src.
#include "kiln/core/core.h"

namespace kiln {

void gather_rows(const TensorView& out, const TensorView& src, const TensorView& index,
                 const TensorView& bad_indices, Stream stream = nullptr);

// K and V gathered by one index in one launch: out_k = k[index], out_v = v[index] (k and v may
// differ in trailing shape and dtype).
void gather_rows_pair(const TensorView& out_k, const TensorView& out_v, const TensorView& k,
                      const TensorView& v, const TensorView& index, const TensorView& bad_indices,
                      Stream stream = nullptr);

}  // namespace kiln
