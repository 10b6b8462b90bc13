#pragma once
// Manifold-constrained hyper-connections (mHC, arXiv 2512.24880): the Sinkhorn-Knopp projection
// of the residual-mixing logits, and the static n-stream mixing around each layer.
//
// ---- sinkhorn_knopp: the projection onto the doubly stochastic matrices (Birkhoff polytope) ----
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

// ---- mhc_pre_mix / mhc_post_mix: the n-stream mixing ----
// A layer F sees one row mixed from the n residual streams and writes its output back into all of
// them (the paper's x_{l+1} = H_res x_l + H_post^T F(H_pre x_l)):
//   pre-mix   h[t, :]     = sum_i H_pre[t, i] * x[t, i, :]
//   post-mix  x'[t, j, :] = sum_i H_res[t, j, i] * x[t, i, :] + H_post[t, j] * y[t, :]
// H_res multiplies the stream matrix from the left: row j of H_res mixes into stream j.
// Convention note: some implementations (e.g. DeepSeek-V4's Hugging Face code,
// `comb.transpose(-1, -2) @ streams`) use the transpose, x'_j = sum_i H[i, j] x_i; those callers
// pass H_res.transpose(-1, -2), a strided view (H's strides are free), not a copy.
//
// Shapes and layout:
//   x, x_out, dx, dx_out: [T, n, C] (token, stream, hidden), n in [1, kMhcMaxStreams]; the last
//       dim contiguous, the token and stream strides free.
//   h, dh, y, dy: [T, C], the last dim contiguous and any row stride.
//   H_pre, H_post: [T, n]; H_res: [T, n, n]; f32, ANY strides, including 0 over T (one static
//       matrix broadcast to every token is an expand, not a copy) and a transposed H_res view.
//   dH_pre, dH_post: [T, n]; dH_res: [T, n, n]: f32, one value a token (a caller whose H is
//       broadcast over T sums them over T, as torch's autograd of an expand does); the last dim
//       contiguous and the leading dims collapsible into one row stride (e.g. contiguous).
// dtypes: x, y, h and every stream or row output one of f32, bf16, f16 (one a call); the H's and
// dH's f32. Math in fp32, the terms of every sum added in a fixed order: the same bits every run,
// no atomics. The post-mix has its own fully unrolled n = 4 kernels (any other n: loops unrolled
// to 8 that stop at n); the pre-mix runs on moe_sum's kernels (k = n, loops unrolled to 16 that
// stop at k). Outputs must not overlap the inputs or each other (not checked).
// Cost: each op is one pass: post-mix forward reads x and y once and writes x_out once; its
// backward reads dx_out, x and y once and writes dx and dy once (bytes: (2n + 1) T C and
// (3n + 2) T C elements plus the H's); the pre-mix reads x once and writes h (forward) or reads
// dh and x once and writes dx (backward).
// Errors (kiln::Error naming the op and argument): wrong rank, T, n or C disagreeing between
// arguments, n outside [1, kMhcMaxStreams], H or dH not f32, streams and rows of different
// dtypes, tensors on different devices, a last dim not contiguous.

inline constexpr int kMhcMaxStreams = 8;

// h [T, C] = sum_i H_pre[t, i] * x[t, i, :].
void mhc_pre_mix(const TensorView& h, const TensorView& x, const TensorView& h_pre,
                 Stream stream = nullptr);

// dx[t, i, :] = H_pre[t, i] * dh[t, :]; dh_pre[t, i] = <dh[t, :], x[t, i, :]> (skipped when
// dh_pre is absent).
void mhc_pre_mix_backward(const TensorView& dx, const TensorView& dh_pre, const TensorView& dh,
                          const TensorView& x, const TensorView& h_pre, Stream stream = nullptr);

// x_out [T, n, C]: x_out[t, j, :] = sum_i H_res[t, j, i] * x[t, i, :] + H_post[t, j] * y[t, :].
void mhc_post_mix(const TensorView& x_out, const TensorView& x, const TensorView& y,
                  const TensorView& h_res, const TensorView& h_post, Stream stream = nullptr);

// From dx_out [T, n, C], in one pass:
//   dx[t, i, :]     = sum_j H_res[t, j, i] * dx_out[t, j, :]
//   dy[t, :]        = sum_j H_post[t, j] * dx_out[t, j, :]
//   dh_res[t, j, i] = <dx_out[t, j, :], x[t, i, :]>
//   dh_post[t, j]   = <dx_out[t, j, :], y[t, :]>
void mhc_post_mix_backward(const TensorView& dx, const TensorView& dy, const TensorView& dh_res,
                           const TensorView& dh_post, const TensorView& dx_out, const TensorView& x,
                           const TensorView& y, const TensorView& h_res, const TensorView& h_post,
                           Stream stream = nullptr);

}  // namespace kiln
