#pragma once
// Hyper-connections (mHC): the Sinkhorn-Knopp projection of the residual-mixing logits onto the
// doubly stochastic matrices (the Birkhoff polytope).
//
// logits, out, dout, dlogits: [B, n, n], n in [1, 64] (n = 4 is the hot case), the last dim
// contiguous and [B, n] collapsible into one row stride; f32, bf16 or f16, one dtype a call.
// Starting point, as in the mHC paper: M0 = exp(logits), computed as exp(logits - max) with the
// matrix's max, which only rescales M0 (the first normalisation removes the scale; with eps > 0
// the results differ by O(eps)). Then `iters` iterations of: every row divided by (its sum + eps),
// then every column divided by (its sum + eps). A fixed number of iterations, no early exit: the
// same work and the same bits every run, safe in a CUDA graph. fp32 math on the GPU (float64 in
// the reference).
#include "kiln/core/core.h"

namespace kiln {

inline constexpr int kSinkhornMaxN = 64;

void sinkhorn_knopp(const TensorView& out, const TensorView& logits, int iters, double eps,
                    Stream stream = nullptr);

// dlogits from dout, through every iteration and the exp (the max shift held constant): the
// iterates are recomputed from the logits, not stored.
void sinkhorn_knopp_backward(const TensorView& dlogits, const TensorView& dout,
                             const TensorView& logits, int iters, double eps,
                             Stream stream = nullptr);

}  // namespace kiln
