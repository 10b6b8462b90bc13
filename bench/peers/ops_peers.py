#!/usr/bin/env python3
"""Side-by-side benchmark of kiln's data-movement and small-math ops vs their peers, one process.

Every case times each implementation's forward and, where the op has one, its backward
(torch.autograd.grad on a fresh, untimed forward's graph), bf16 unless stated:

  bias_dropout_add  x, residual [16384, 8192], bias [8192]; p = 0.1, training
      eager    residual + F.dropout(x + bias, p)  (torch's RNG: the mask differs; the cost is
               compared)
      compile  torch.compile of that
      kiln     kiln.bias_dropout_add(x, bias, residual, p)  (seed drawn per call, the default)
      bytes    fwd: x + bias + residual read, out written; bwd: dout read, dx + dbias written
               (d residual is dout itself; eager's saved mask is not counted)
  moe_sum  x [4096, 8, 7168] bf16, weights [4096, 8] f32 (kiln takes f32 or x's dtype)
      eager    (x.float() * w[..., None]).sum(1).to(bf16)  (fp32 accumulation, as kiln)
      bmm      torch.bmm(w.to(bf16)[:, None], x)[:, 0]  (cuBLAS, fp32 accumulation, w rounded)
      compile  torch.compile(eager)
      kiln     kiln.moe_sum(x, w)
      bytes    fwd: x + w read, out written; bwd: dout + x + w read, dx + dw written
  sinkhorn_knopp  logits [B, 4, 4] f32, B in {16384, 65536}, iters = 20, eps = 1e-6 (passed;
      kiln's default is 1e-8)
      eager    M = exp(l - amax(l, (-1, -2), keepdim).detach()) (kiln holds the shift constant in
               its backward too); iters x: M /= M.sum(-1) + eps; M /= M.sum(-2) + eps
      compile  torch.compile(eager);  kiln  kiln.sinkhorn_knopp(logits, iters, eps)
      bytes    fwd: logits read, out written; bwd: logits + dout read, dlogits written
  mhc_pre_mix, mhc_post_mix (--ops mhc_mix)  x [4096, 4, 8192] bf16 (n = 4 streams), y [4096, 8192]
      bf16, per-token H's f32: H_pre, H_post [4096, 4], H_res [4096, 4, 4]
      eager    pre: einsum('ti,tic->tc', H_pre, x.float()).to(bf16); post: (einsum('tji,tic->tjc',
               H_res, x.float()) + H_post[..., None] * y[:, None].float()).to(bf16) (fp32 math,
               as kiln)
      bmm      pre: torch.bmm(H_pre.to(bf16)[:, None], x)[:, 0]; post: torch.baddbmm((H_post[...,
               None] * y[:, None]).to(bf16), H_res.to(bf16), x) (cuBLAS, fp32 accumulation, H
               rounded)
      compile  torch.compile(eager);  kiln  kiln.mhc_pre_mix(x, H_pre) / kiln.mhc_post_mix(x, y,
               H_res, H_post)
      bytes    pre fwd: x + H_pre read, h written; bwd: dh + x + H_pre read, dx + dH_pre written;
               post fwd: x + y + H's read, x' written; bwd: dx' + x + y + H's read, dx + dy + dH's
               written
  gather_rows, gather_rows_pair  src (k, v) [65536, 8, 128], index [32768] int32 and int64 (distinct
      random rows). Forward only.
      index_select  src.index_select(0, index);  indexing  src[index]
      compile       torch.compile(index_select);  kiln  kiln.gather_rows / kiln.gather_rows_pair
      bytes    gathered rows read + written, index read (x2 rows for the pair): the rows not picked
               are never read, so src is not counted whole
  kv_cache_write  k, v [T, 8, 128], T in {4096, 32768}, into caches [2T / 16, 16, 8, 128] at int64
      slots, a random half of the cache (as bench/cache_bench.cpp). Forward only.
      index_copy  key_cache.view(-1, 8, 128).index_copy_(0, slots, k) (and v)
      index_put   key_cache.view(-1, 8, 128)[slots] = k (and v)
      compile     torch.compile(index_copy);  kiln  kiln.kv_cache_write_(kc, vc, k, v, slots)
      bytes    k + v read, their cache rows written, slots read
  tau_tail  qkv [16384, 3 H D], H = 32, D = 128; tok_qv_lin [16384, 2H]; tau_pos_table [4096, H];
      positions int64 [16384] (random). In place: q_h *= tanh(tok_q_h) + tau[pos, h], v_h likewise
      (with tok_v_h), k untouched; fp32 math, one rounding. Forward only.
      eager    the same in-place math in torch;  compile  torch.compile(eager)
      kiln     kiln.tau_tail_(qkv, tok_qv_lin, tau_pos_table, positions, H)
      bytes    q + v read and written, tok_qv_lin read, the T x H gathered tau entries, positions
      (each repetition restores qkv first, untimed)
  rope, rope_  T = B x S = 4 x 4096 tokens, positions int64 arange(S) repeated B times;
      q [T, 32, 128] and k [T, Hk, 128], Hk in {8, 32}: strided views into one fused qkv
      [T, (32 + 2 Hk) 128] (v untouched); cos_sin_cache f32 [S, 128], row p = cos(p theta_i) |
      sin(p theta_i), theta_i = 10000^(-2i / 128); NeoX layout (pairs i, i + 64), rotary_dim = 128
      (the whole head).
      rope: out of place, fwd and bwd (grads of q and k)
      eager       HF's formula, cos/sin rows gathered by positions and doubled (cat(c, c)), in fp32,
                  cast back once (as kiln): q*cos + rotate_half(q)*sin, likewise k
      eager_bf16  the same in bf16 as HF runs it (cos/sin cast to bf16, bf16 products and sum)
      compile     torch.compile(eager)
      liger       Liger-Kernel's LigerRopeFunction on [B, H, S, D] transposes of the views, cos/sin
                  [1, S, 128] f32 built once, untimed (HF's rotary-module output, shared by every
                  layer); Liger takes no positions: it assumes arange(S) in each sequence, as here.
                  Its wrapper makes q and k contiguous, so on the fused views every call copies
                  them (timed: part of its call) and rotates the copies in place; its backward
                  rotates the incoming gradient in place (contiguous here, so no copy)
      kiln        kiln.rope(q, k, cache, positions, "neox", 128)
      rope_: in place on the fused views, forward only (each repetition restores qkv, untimed)
      eager       eager's math copied back into q and k;  compile  torch.compile of that
      liger_kernel  Liger's Triton kernel (liger_kernel.ops.rope._triton_rope, 0.8.5's arguments)
                  launched on the views as its wrapper launches it, minus the .contiguous()
                  copies (the kernel takes a token stride and assumes heads D apart, which the
                  fused views are): the kernel's own cost
      kiln        kiln.rope_(q, k, cache, positions, "neox", 128)
      bytes    q + k read and written, each token's cos/sin row (4 x 128 x T, as kiln reads it),
               positions (8 T); bwd the same (dq_out + dk_out read, dq + dk written)

Timing: activation_peers.Timer (CUDA events around each call, L2 flushed and torch.cuda._sleep
before every repetition, median of --reps), with one more GPU sleep queued by the (untimed) setup,
sized from the call's synchronized wall time, so that the events bracket the call's GPU work even
for the host-heavy peers (eager Sinkhorn launches ~120 kernels a forward). "launched" is the wall
time of one call issued to an idle GPU (synchronized before and after: host overhead included),
median of a few. The ceiling is the device-to-device copy bandwidth measured in the same run;
"% copy" = bytes / time / ceiling. peer/kiln = best peer median / kiln median (>= 1: kiln wins).

Checks, on each implementation's first call (which also compiles): outputs and gradients against
eager's, max |a - b| / max |b| within the dtype's tolerance (gathers and cache writes: bit-exact);
bias_dropout_add with p = 0 against eager, and at p = 0.1 each impl's own output and dx: every
element either the residual (dx 0) or residual + (x + bias) / (1 - p) (dx = dout / (1 - p)), the
kept fraction near 1 - p, forward and backward masks agreeing, dbias = the column sums of dx.
A failed check (or a call that raises) is printed loudly, marked in the tables and listed in the
JSON ("check_failures"); a failed check is still timed. kiln not importable, or an op missing
from the installed kiln: its rows say "missing: ..." and the peers run.

--quick: bias_dropout_add [4096, 4096], moe_sum and mhc_mix T = 1024, sinkhorn B = 16384, gather
[16384] -> 8192, kv_cache_write T = 4096, tau_tail T = 4096, rope T = 1 x 4096; 20 reps. --device
cpu: tiny shapes, 3 reps, no torch.compile unless --compile-on-cpu (a smoke test of the code paths;
kiln runs its reference).

Usage: python3 bench/peers/ops_peers.py [--quick] [--ops a,b] [--out DIR] [--commit SHA]
                                         [--reps N] [--device cuda|cpu] [--compile-on-cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from activation_peers import REPO, Timer, git_commit  # noqa: E402

OPS = ["bias_dropout_add", "moe_sum", "sinkhorn_knopp", "mhc_mix", "gather_rows", "kv_cache_write",
       "tau_tail", "rope", "topk", "router", "hash_router", "dense_router"]
TOL = {torch.bfloat16: 1.6e-2, torch.float16: 2e-3, torch.float32: 1e-4}  # ~4 ulp of the max


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--ops", default=",".join(OPS), help="comma list of " + ",".join(OPS))
    p.add_argument("--out", default=None)
    p.add_argument("--commit", default="")
    p.add_argument("--device", default="cuda")
    p.add_argument("--compile-on-cpu", action="store_true",
                   help="with --device cpu, also run torch.compile (slow: C++ codegen)")
    a = p.parse_args()
    a.ops = [o.strip() for o in a.ops.split(",") if o.strip()]
    for o in a.ops:
        if o not in OPS:
            p.error(f"unknown op {o!r} (ops: {','.join(OPS)})")
    return a


def short(e: BaseException, n: int = 200) -> str:
    s = f"{type(e).__name__}: {e}".replace("\n", " ")
    return s if len(s) <= n else s[: n - 3] + "..."


# ---- shared pieces of the cases ----


class Env:
    """What the op functions need: device, size class, RNG, kiln (or why not), compile policy."""

    def __init__(self, args, device):
        self.device = device
        self.size = "cpu" if device.type == "cpu" else ("quick" if args.quick else "full")
        self.gen = torch.Generator().manual_seed(0)
        self.compile_ok = device.type == "cuda" or args.compile_on_cpu
        sys.path.insert(0, str(REPO / "torch"))
        try:
            import kiln

            self.kiln, self.kiln_err = kiln, None
        except Exception as e:  # noqa: BLE001
            self.kiln, self.kiln_err = None, short(e)
            print(f"kiln not importable: {self.kiln_err}", file=sys.stderr)

    def pick(self, full, quick, cpu):
        return {"full": full, "quick": quick, "cpu": cpu}[self.size]

    def randn(self, *shape, dtype=torch.bfloat16, scale=1.0, shift=0.0, grad=False):
        t = (torch.randn(*shape, generator=self.gen) * scale + shift).to(self.device, dtype)
        return t.requires_grad_(grad)

    def perm(self, n, m, dtype=torch.int64):
        return torch.randperm(n, generator=self.gen)[:m].to(self.device, dtype)

    def compiled(self, f):
        if not self.compile_ok:
            return "skipped: torch.compile on cpu (--compile-on-cpu)"
        return torch.compile(f, dynamic=False)

    def kiln_fn(self, func, ops, make):
        """make(kiln) -> the call; or why it cannot run: kiln not importable, or kiln.<func> /
        torch.ops.kiln.<op> missing from this build."""
        if self.kiln is None:
            return f"missing: kiln not importable ({self.kiln_err})"
        if not hasattr(self.kiln, func):
            return f"missing: kiln.{func}"
        for op in ops:
            if not hasattr(torch.ops.kiln, op):
                return f"missing: torch.ops.kiln.{op} (stale _C build?)"
        return make(self.kiln)


def as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def rel_err(a, b):
    """max |a - b| / max |b| (max |a - b| where b is all zeros), in fp32."""
    a, b = a.detach().float(), b.detach().float()
    if a.shape != b.shape:
        return float("inf")
    d = (a - b).abs().max().item() if a.numel() else 0.0
    m = b.abs().max().item() if b.numel() else 0.0
    return d / m if m > 0 else d


def compare(names, got, ref, tol, exact=False):
    """(verdict, {name: error}) of got against ref, tensor by tensor."""
    errs, bad = {}, []
    if len(got) != len(ref):
        bad.append(f"{len(got)} results, expected {len(ref)}")
    for name, a, b in zip(names, got, ref):
        if a is None or b is None:
            errs[name] = "none"
            bad.append(f"{name} is None")
        elif exact:
            same = a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
            errs[name] = "equal" if same else "differ"
            if not same:
                bad.append(f"{name} not bit-equal")
        else:
            errs[name] = rel_err(a, b)
            if not errs[name] <= tol:
                bad.append(f"{name} {errs[name]:.2e} > {tol:.1e}")
    return ("ok" if not bad else "MISMATCH " + "; ".join(bad)), errs


def against_eager(eager, run, names, tol, exact=False):
    """A check: run(fn) -> tensors; every impl's against eager's (computed once)."""
    memo = {}

    def check(fn):
        if "ref" not in memo:
            memo["ref"] = [t.detach().clone() for t in run(eager)]
        return compare(names, run(fn), memo["ref"], tol, exact)

    return check


def fwd_bwd(fn, inputs, leaves, gouts):
    outs = as_tuple(fn(*inputs))
    return list(outs) + (list(torch.autograd.grad(outs, leaves, gouts)) if leaves else [])


def case(op, shape, impls, inputs, fwd_bytes, check, leaves=None, gouts=None, bwd_bytes=None,
         restore=None):
    """One measured shape. impls: name -> fn(*inputs), or a string saying why it cannot run.
    leaves/gouts: what torch.autograd.grad takes (None: forward only). restore: run (untimed)
    before every call of an in-place op."""
    return dict(op=op, shape=shape, impls=impls, inputs=inputs, fwd_bytes=fwd_bytes, check=check,
                leaves=leaves, gouts=gouts, bwd_bytes=bwd_bytes, restore=restore)


def nbytes(*ts):
    return sum(t.numel() * t.element_size() for t in ts)


# ---- the ops: each yields its cases ----


def op_bias_dropout_add(env):
    m, n = env.pick((16384, 8192), (4096, 4096), (64, 256))
    p = 0.1
    x, r = env.randn(m, n, grad=True), env.randn(m, n, grad=True)
    b = env.randn(n, scale=0.1, grad=True)
    dout = env.randn(m, n)

    def math(x, b, r, p):
        return r + F.dropout(x + b, p, training=True)

    impls = {"eager": math, "compile": env.compiled(math),
             "kiln": env.kiln_fn("bias_dropout_add", ["bias_dropout_add"],
                                 lambda k: lambda x, b, r, p: k.bias_dropout_add(x, b, r, p))}
    names = ["out", "dx", "dbias", "dresidual"]
    plain = against_eager(math, lambda fn: fwd_bwd(lambda *t: fn(*t, 0.0), (x, b, r), [x, b, r],
                                                     [dout]), names, TOL[x.dtype])

    def check(fn):
        verdict, errs = plain(fn)
        v2, e2 = dropout_stats(fn, x, b, r, dout, p)
        errs.update(e2)
        bad = [v for v in (verdict, v2) if v != "ok"]
        return ("ok" if not bad else "MISMATCH " + "; ".join(v.removeprefix("MISMATCH ")
                                                              for v in bad)), errs

    yield case("bias_dropout_add", f"[{m}, {n}] p={p}", impls, (x, b, r, p), nbytes(x, b, r, x),
               check, leaves=[x, b, r], gouts=[dout], bwd_bytes=nbytes(dout, x, b))


def dropout_stats(fn, x, b, r, dout, p):
    """At p > 0: each element of out either r (dropped) or r + (x + b) / (1 - p) (kept), dx 0 or
    dout / (1 - p) with the same mask, the kept fraction near 1 - p, dbias = sum_rows dx."""
    out = fn(x, b, r, p)
    dx, db, dr = torch.autograd.grad(out, [x, b, r], dout)
    tol = TOL[x.dtype]
    out, dx, db, dr = (t.detach() for t in (out, dx, db, dr))
    rf, y = r.detach().float(), (x.detach().float() + b.detach().float()) / (1 - p)
    dropped = out == r.detach()
    kept_bad = ~dropped & ((out.float() - (rf + y)).abs() > tol * (rf.abs() + y.abs()) + 1e-3)
    dropped_b = (dx == 0) & (dout != 0)
    dx_bad = ~(dx == 0) & ((dx.float() - dout.float() / (1 - p)).abs()
                           > tol * dout.float().abs() / (1 - p) + 1e-6)
    nel = out.numel()
    kept = 1.0 - dropped.sum().item() / nel
    errs = {"kept_fraction": kept,
            "kept_fraction_bwd": 1.0 - dropped_b.sum().item() / max(1, (dout != 0).sum().item()),
            "out_neither_dropped_nor_kept": kept_bad.sum().item() / nel,
            "dx_wrong_scale": dx_bad.sum().item() / nel,
            "fwd_bwd_mask_disagree": (dropped != dropped_b).sum().item() / nel,
            "dbias": rel_err(db, dx.float().sum(0)),
            "dresidual": rel_err(dr, dout)}
    frac_tol = max(5e-3, 5 * (p * (1 - p) / nel) ** 0.5)
    bad = []
    if abs(kept - (1 - p)) > frac_tol:
        bad.append(f"kept fraction {kept:.4f} vs {1 - p:.4f}")
    for k in ("out_neither_dropped_nor_kept", "dx_wrong_scale"):
        if errs[k] > 0:
            bad.append(f"{k} {errs[k]:.1e}")
    # An element kept whose scaled value rounds away against r looks dropped in out: rare.
    if errs["fwd_bwd_mask_disagree"] > 5e-3:
        bad.append(f"fwd/bwd masks disagree on {errs['fwd_bwd_mask_disagree']:.1e}")
    for k in ("dbias", "dresidual"):
        if not errs[k] <= tol:
            bad.append(f"p={p} {k} {errs[k]:.2e} > {tol:.1e}")
    return ("ok" if not bad else "MISMATCH " + "; ".join(bad)), errs


def op_moe_sum(env):
    t, k, n = env.pick((4096, 8, 7168), (1024, 8, 7168), (16, 4, 256))
    x = env.randn(t, k, n, grad=True)
    w = torch.softmax(env.randn(t, k, dtype=torch.float32), -1).requires_grad_()
    dout = env.randn(t, n)

    def math(x, w):
        return (x.float() * w[..., None].float()).sum(1).to(x.dtype)

    def bmm(x, w):
        return torch.bmm(w.to(x.dtype)[:, None], x)[:, 0]

    impls = {"eager": math, "bmm": bmm, "compile": env.compiled(math),
             "kiln": env.kiln_fn("moe_sum", ["moe_sum"], lambda kl: kl.moe_sum)}
    check = against_eager(math, lambda fn: fwd_bwd(fn, (x, w), [x, w], [dout]),
                          ["out", "dx", "dw"], TOL[x.dtype])
    yield case("moe_sum", f"[{t}, {k}, {n}] w f32", impls, (x, w), nbytes(x, w, dout), check,
               leaves=[x, w], gouts=[dout], bwd_bytes=nbytes(dout, x, w, x, w))


def op_sinkhorn_knopp(env):
    iters, eps = 20, 1e-6

    def math(logits, iters, eps):
        m = torch.exp(logits - logits.amax(dim=(-1, -2), keepdim=True).detach())
        for _ in range(iters):
            m = m / (m.sum(-1, keepdim=True) + eps)
            m = m / (m.sum(-2, keepdim=True) + eps)
        return m

    comp = env.compiled(math)
    kiln = env.kiln_fn("sinkhorn_knopp", ["sinkhorn_knopp"], lambda k: k.sinkhorn_knopp)
    for batch in env.pick((16384, 65536), (16384,), (64,)):
        logits = env.randn(batch, 4, 4, dtype=torch.float32, scale=2.0, grad=True)
        dout = env.randn(batch, 4, 4, dtype=torch.float32)
        inputs = (logits, iters, eps)
        check = against_eager(math, lambda fn, i=inputs, d=dout: fwd_bwd(fn, i, [i[0]], [d]),
                              ["out", "dlogits"], TOL[logits.dtype])
        yield case("sinkhorn_knopp", f"[{batch}, 4, 4] f32 iters={iters} eps={eps:g}",
                   {"eager": math, "compile": comp, "kiln": kiln}, inputs, 2 * nbytes(logits),
                   check, leaves=[logits], gouts=[dout], bwd_bytes=3 * nbytes(logits))


def op_mhc_mix(env):
    t, n, c = env.pick((4096, 4, 8192), (1024, 4, 8192), (16, 4, 256))
    x = env.randn(t, n, c, grad=True)
    y = env.randn(t, c, grad=True)
    h_pre = env.randn(t, n, dtype=torch.float32, scale=0.2, shift=0.5, grad=True)
    h_post = env.randn(t, n, dtype=torch.float32, scale=0.2, shift=0.5, grad=True)
    h_res = env.randn(t, n, n, dtype=torch.float32, scale=0.1, shift=0.25, grad=True)
    dh, dout = env.randn(t, c), env.randn(t, n, c)

    def pre(x, h_pre):
        return torch.einsum("ti,tic->tc", h_pre, x.float()).to(x.dtype)

    def pre_bmm(x, h_pre):
        return torch.bmm(h_pre.to(x.dtype)[:, None], x)[:, 0]

    def post(x, y, h_res, h_post):
        mixed = torch.einsum("tji,tic->tjc", h_res, x.float())
        return (mixed + h_post[..., None] * y[:, None].float()).to(x.dtype)

    def post_bmm(x, y, h_res, h_post):
        return torch.baddbmm((h_post[..., None] * y[:, None].float()).to(x.dtype),
                             h_res.to(x.dtype), x)

    impls = {"eager": pre, "bmm": pre_bmm, "compile": env.compiled(pre),
             "kiln": env.kiln_fn("mhc_pre_mix", ["mhc_pre_mix"], lambda kl: kl.mhc_pre_mix)}
    check = against_eager(pre, lambda fn: fwd_bwd(fn, (x, h_pre), [x, h_pre], [dh]),
                          ["h", "dx", "dh_pre"], TOL[x.dtype])
    yield case("mhc_pre_mix", f"[{t}, {n}, {c}] H f32", impls, (x, h_pre), nbytes(x, h_pre, dh),
               check, leaves=[x, h_pre], gouts=[dh], bwd_bytes=nbytes(dh, x, h_pre, x, h_pre))
    ins = (x, y, h_res, h_post)
    impls = {"eager": post, "bmm": post_bmm, "compile": env.compiled(post),
             "kiln": env.kiln_fn("mhc_post_mix", ["mhc_post_mix"], lambda kl: kl.mhc_post_mix)}
    check = against_eager(post, lambda fn: fwd_bwd(fn, ins, list(ins), [dout]),
                          ["x_out", "dx", "dy", "dh_res", "dh_post"], TOL[x.dtype])
    yield case("mhc_post_mix", f"[{t}, {n}, {c}] H f32", impls, ins,
               nbytes(x, y, h_res, h_post, x), check, leaves=list(ins), gouts=[dout],
               bwd_bytes=nbytes(dout, x, y, h_res, h_post, x, y, h_res, h_post))


def op_gather_rows(env):
    # Two sizes: 67 MB gathered (a KV-cache compaction), and 268 MB, the scale of issue 3's
    # "large shapes", where a call's fixed cost no longer shows in its share of the copy rate.
    for n, m in env.pick([(65536, 32768), (262144, 131072)], [(16384, 8192)], [(256, 128)]):
        yield from gather_cases(env, n, m)


def gather_cases(env, n, m):
    h, d = env.pick((8, 128), (8, 128), (2, 32))
    k, v = env.randn(n, h, d), env.randn(n, h, d)
    row = h * d * k.element_size()

    def index_select(src, index):
        return src.index_select(0, index)

    def pair_select(k, v, index):
        return k.index_select(0, index), v.index_select(0, index)

    for idt in (torch.int32, torch.int64):
        index = env.perm(n, m, idt)
        single = {"index_select": index_select, "indexing": lambda s, i: s[i],
                  "compile": env.compiled(index_select),
                  "kiln": env.kiln_fn("gather_rows", ["gather_rows"], lambda kl: kl.gather_rows)}
        pair = {"index_select": pair_select, "indexing": lambda a, b, i: (a[i], b[i]),
                "compile": env.compiled(pair_select),
                "kiln": env.kiln_fn("gather_rows_pair", ["gather_rows_pair"],
                                    lambda kl: kl.gather_rows_pair)}
        tag = str(idt).removeprefix("torch.")
        yield case("gather_rows", f"[{n}, {h}, {d}] -> {m} rows, {tag} index", single, (k, index),
                   2 * m * row + nbytes(index),
                   against_eager(index_select, lambda fn: as_tuple(fn(k, index)), ["out"], 0, True))
        yield case("gather_rows_pair", f"2x [{n}, {h}, {d}] -> {m} rows, {tag} index", pair,
                   (k, v, index), 4 * m * row + nbytes(index),
                   against_eager(pair_select, lambda fn: as_tuple(fn(k, v, index)),
                                 ["out_k", "out_v"], 0, True))


def op_kv_cache_write(env):
    h, d = env.pick((8, 128), (8, 128), (2, 32))

    def index_copy(kc, vc, k, v, slots):
        kc.view(-1, h, d).index_copy_(0, slots, k)
        vc.view(-1, h, d).index_copy_(0, slots, v)

    def index_put(kc, vc, k, v, slots):
        kc.view(-1, h, d)[slots] = k
        vc.view(-1, h, d)[slots] = v

    comp = env.compiled(index_copy)
    kiln = env.kiln_fn("kv_cache_write_", ["kv_cache_write"], lambda kl: kl.kv_cache_write_)
    for tokens in env.pick((4096, 32768), (4096,), (64,)):
        blocks = 2 * tokens // 16
        k, v = env.randn(tokens, h, d), env.randn(tokens, h, d)
        kc = torch.zeros(blocks, 16, h, d, dtype=k.dtype, device=env.device)
        vc = torch.zeros_like(kc)
        slots = env.perm(blocks * 16, tokens)

        def written(fn, k=k, v=v, kc=kc, slots=slots):
            kc2, vc2 = torch.zeros_like(kc), torch.zeros_like(kc)
            fn(kc2, vc2, k, v, slots)
            return kc2, vc2

        impls = {"index_copy": index_copy, "index_put": index_put, "compile": comp, "kiln": kiln}
        yield case("kv_cache_write", f"[{tokens}, {h}, {d}] -> [{blocks}, 16, {h}, {d}]", impls,
                   (kc, vc, k, v, slots), 2 * nbytes(k, v) + nbytes(slots),
                   against_eager(index_copy, written, ["key_cache", "value_cache"], 0, True))


def op_tau_tail(env):
    t, h, d, positions_max = env.pick((16384, 32, 128, 4096), (4096, 32, 128, 4096),
                                      (32, 2, 16, 64))
    qkv0 = env.randn(t, 3 * h * d)
    qkv = qkv0.clone()
    tok = env.randn(t, 2 * h)
    tau = env.randn(positions_max, h, scale=0.1, shift=1.0)
    pos = torch.randint(0, positions_max, (t,), generator=env.gen).to(env.device)

    def math(qkv, tok, tau, pos, heads):
        dd = qkv.shape[1] // (3 * heads)
        q = qkv[:, : heads * dd].unflatten(1, (heads, dd))
        v = qkv[:, 2 * heads * dd:].unflatten(1, (heads, dd))
        tp = tau.index_select(0, pos).float()
        sq = torch.tanh(tok[:, :heads].float()) + tp
        sv = torch.tanh(tok[:, heads:].float()) + tp
        q.copy_((q.float() * sq[..., None]).to(qkv.dtype))
        v.copy_((v.float() * sv[..., None]).to(qkv.dtype))
        return qkv

    def result(fn):
        out = qkv0.clone()
        fn(out, tok, tau, pos, h)
        return out[:, : h * d], out[:, h * d: 2 * h * d], out[:, 2 * h * d:]

    memo = {}

    def check(fn):
        if "ref" not in memo:
            memo["ref"] = result(math)
        got = result(fn)
        verdict, errs = compare(["q", "v"], (got[0], got[2]), (memo["ref"][0], memo["ref"][2]),
                                TOL[qkv.dtype])
        v2, e2 = compare(["k"], (got[1],), (qkv0[:, h * d: 2 * h * d],), 0, True)
        errs.update(e2)
        bad = [x.removeprefix("MISMATCH ") for x in (verdict, v2) if x != "ok"]
        return ("ok" if not bad else "MISMATCH " + "; ".join(bad)), errs

    impls = {"eager": math, "compile": env.compiled(math),
             "kiln": env.kiln_fn("tau_tail_", ["tau_tail"], lambda kl: kl.tau_tail_)}
    def restore():
        qkv.copy_(qkv0)

    yield case("tau_tail", f"qkv [{t}, 3x{h}x{d}], tau [{positions_max}, {h}]", impls,
               (qkv, tok, tau, pos, h),
               4 * t * h * d * qkv.element_size() + nbytes(tok, pos) + t * h * tau.element_size(),
               check, restore=restore)



def op_topk(env):
    """DeepSeek-V3's router top-k: f32 scores [T, 256], k = 8, softmax of the picks; T = 16384
    (prefill) and T = 64 (decode). Peers: torch.topk + softmax, eager and compiled. Bytes: scores
    read, values and indices written."""
    for t in env.pick((16384, 64), (16384, 64), (8,)):
        scores = env.randn(t, 256, dtype=torch.float32)

        def math(s):
            v, i = torch.topk(s, 8, dim=1)
            return torch.softmax(v, dim=1), i.int()

        def check(fn):
            got, want = fn(scores), math(scores)
            # Random f32 scores have no ties, so the indices must agree exactly.
            return compare(["values", "indices"], got, want, 1e-5)

        impls = {"eager": math, "compile": env.compiled(math),
                 "kiln": env.kiln_fn("topk", ["topk"], lambda kl: lambda s: kl.topk(
                     s, 8, softmax=True))}
        yield case("topk", f"[{t}, 256] f32 k=8 softmax", impls, (scores,),
                   scores.numel() * 4 + t * 8 * 8, check)


def deepseek_route(logits, b):
    """DeepSeek-V3's routing as a PyTorch user writes it: sigmoid, biased group top-2 sums, 4 of 8
    groups kept, masked top-8, gather, renormalise, scale 2.5 (256 experts)."""
    score = torch.sigmoid(logits)
    sel = score + b
    groups = sel.view(logits.shape[0], 8, 32)
    keep = groups.topk(2, dim=2).values.sum(2).topk(4, dim=1).indices
    mask = torch.zeros(logits.shape[0], 8, dtype=torch.bool, device=logits.device)
    mask.scatter_(1, keep, True)
    sel = sel.masked_fill(~mask.repeat_interleave(32, dim=1), -float("inf"))
    ids = sel.topk(8, dim=1).indices
    w = score.gather(1, ids)
    return w / w.sum(1, keepdim=True) * 2.5, ids.int()


def op_router(env):
    """DeepSeek-V3's router, f32 logits [T, 256], k = 8, 8 groups with 4 kept, bias, scaling 2.5;
    T = 16384 and 64; then the softmax router (renormalised) and MegaMoE's activation router
    (sqrt(softplus), bias for the selection) at the same shapes. Peers: the eager composition (sigmoid, biased group top-2 sums, masked
    top-k, gather, renormalise, scale) and torch.compile of it. Logits are well-separated levels
    so the ids must agree exactly. Bytes: logits and bias read, weights and ids written."""
    for t in env.pick((16384, 64), (16384, 64), (8,)):
        g = torch.Generator().manual_seed(t)
        logits = (torch.stack([torch.randperm(256, generator=g) for _ in range(t)]).float() / 64
                  - 2).to(env.device)
        bias = (torch.randint(0, 3, (256,), generator=g) * 2.0).to(env.device)

        def math(x, b):
            return deepseek_route(x, b)

        def check(fn):
            return compare(["weights", "ids"], fn(logits, bias), math(logits, bias), 1e-5)

        impls = {"eager": math, "compile": env.compiled(math),
                 "kiln": env.kiln_fn("router", ["router"], lambda kl: lambda x, b: kl.router(
                     x, 8, kind="deepseek_v3", bias=b, n_group=8, topk_group=4,
                     routed_scaling_factor=2.5))}
        yield case("router", f"deepseek_v3 [{t}, 256] f32 k=8 g8/4", impls, (logits, bias),
                   logits.numel() * 4 + 256 * 4 + t * 8 * 8, check)

        def softmax_math(x, b):
            w, ids = torch.softmax(x, dim=1).topk(8, dim=1)
            return w / w.sum(1, keepdim=True), ids.int()

        def activation_math(x, b):  # MegaMoE: sqrt(softplus), bias for the selection only
            score = torch.sqrt(torch.nn.functional.softplus(x))
            ids = (score + b).topk(8, dim=1).indices
            w = score.gather(1, ids)
            return w / w.sum(1, keepdim=True), ids.int()

        for kind, math_fn, kw in (("softmax", softmax_math, {"renormalize": True}),
                                  ("activation", activation_math, {})):
            def check_kind(fn, math_fn=math_fn):
                return compare(["weights", "ids"], fn(logits, bias), math_fn(logits, bias), 1e-5)

            def kiln_kind(kl, kind=kind, kw=kw):
                if kind == "softmax":
                    return lambda x, b: kl.router(x, 8, kind="softmax", **kw)
                return lambda x, b: kl.router(x, 8, kind=kind, bias=b, **kw)

            impls = {"eager": math_fn, "compile": env.compiled(math_fn),
                     "kiln": env.kiln_fn("router", ["router"], kiln_kind)}
            yield case("router", f"{kind} [{t}, 256] f32 k=8", impls, (logits, bias),
                       logits.numel() * 4 + t * 8 * 8, check_kind)


def op_hash_router(env):
    """The hash router: ids = table[token id] from a table int32 [vocab = 129280, k = 8], weights
    1/k; T = 16384 and 64. The eager composition keeps kiln's contract (a token id outside the
    table is never read: ids -1, weights 0): validity mask, clamped gather, two where()s; neither
    side counts (kiln's default; return_bad_count=True adds the count and its zero-fill). Peers:
    that, and torch.compile of it. Bytes: token ids and the table rows read, weights and ids
    written."""
    vocab, k = 129280, 8
    for t in env.pick((16384, 64), (16384, 64), (8,)):
        g = torch.Generator().manual_seed(t)
        table = torch.randint(0, 256, (vocab, k), generator=g, dtype=torch.int32).to(env.device)
        tokens = torch.randint(0, vocab, (t,), generator=g).to(env.device)

        def math(tok, tab):
            ok = (tok >= 0) & (tok < tab.shape[0])
            ids = torch.where(ok[:, None], tab[tok.clamp(0, tab.shape[0] - 1)], -1)
            w = torch.where(ok[:, None], 1.0 / tab.shape[1], 0.0).float().expand(-1, tab.shape[1])
            return w.contiguous(), ids.int()

        def check(fn):
            return compare(["weights", "ids"], fn(tokens, table), math(tokens, table), 0,
                           exact=True)

        impls = {"eager": math, "compile": env.compiled(math),
                 "kiln": env.kiln_fn("hash_router", ["hash_router"],
                                     lambda kl: lambda tok, tab: kl.hash_router(tok, tab))}
        yield case("hash_router", f"[{t}] of [{vocab}, {k}] int32", impls, (tokens, table),
                   t * 8 + t * k * 4 + t * k * 8, check)


def op_dense_router(env):
    """The dense router from hidden states at DeepSeek-V3's shape: x bf16 [T, 7168], gate bf16
    [256, 7168], the deepseek_v3 routing (8 groups, 4 kept, bias, scaling 2.5), k = 8; T = 1 and
    16 (kiln's fused kernel) and 64, 16384 (cuBLAS + the router kernel). Peers: F.linear in fp32
    then the eager routing, and torch.compile of both. x's first 256 columns hold separated levels
    and the gate is the identity there (zero past it), so the logits are exact and the ids must
    agree. Bytes: x and gate read, weights and ids written."""
    for t in env.pick((1, 16, 64, 16384), (1, 16, 64, 16384), (2,)):
        g = torch.Generator().manual_seed(t)
        levels = torch.stack([torch.randperm(256, generator=g) for _ in range(t)]).float() / 64 - 2
        x = torch.cat([levels, torch.randn(t, 7168 - 256, generator=g)], 1).to(env.device,
                                                                                torch.bfloat16)
        gate = torch.cat([torch.eye(256), torch.zeros(256, 7168 - 256)], 1).to(env.device,
                                                                               torch.bfloat16)
        bias = (torch.randint(0, 3, (256,), generator=g) * 2.0).to(env.device)

        def math(x, gate, b):
            return deepseek_route(F.linear(x.float(), gate.float()), b)

        def kiln_dense(kl):
            return lambda x, gate, b: kl.dense_router(
                x, gate, 8, kind="deepseek_v3", bias=b, n_group=8, topk_group=4,
                routed_scaling_factor=2.5)[:2]

        def check(fn):
            return compare(["weights", "ids"], fn(x, gate, bias), math(x, gate, bias), 1e-5)

        impls = {"eager": math, "compile": env.compiled(math),
                 "kiln": env.kiln_fn("dense_router", ["dense_router"], kiln_dense)}
        yield case("dense_router", f"deepseek_v3 x [{t}, 7168] bf16 gate [256, 7168] k=8", impls,
                   (x, gate, bias), x.numel() * 2 + gate.numel() * 2 + t * 8 * 8, check)


def rope_cache(max_position, rotary_dim, device, base=10000.0):
    """kiln's cos_sin_cache f32 [max_position, R]: cos(p theta_i) | sin(p theta_i), theta_i =
    base^(-2i / R), computed in float64 and rounded once (as kiln::rope_fill_cache)."""
    inv = base ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
    ang = torch.arange(max_position, dtype=torch.float64)[:, None] * inv[None]
    return torch.cat([ang.cos(), ang.sin()], -1).to(device, torch.float32).contiguous()


def rope_cos_sin(cache, pos, dtype=torch.float32):
    """HF's cos, sin [T, 1, R] (each half doubled: cat(freqs, freqs)) from the cache rows."""
    c, s = cache.index_select(0, pos).chunk(2, -1)
    return torch.cat([c, c], -1)[:, None].to(dtype), torch.cat([s, s], -1)[:, None].to(dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, -1)
    return torch.cat([-x2, x1], -1)


def rope_math(q, k, cache, pos):
    """NeoX rope, HF's formula (rotary_dim = head dim), fp32 math and one rounding, as kiln."""
    cos, sin = rope_cos_sin(cache, pos)
    qf, kf = q.float(), k.float()
    return ((qf * cos + rotate_half(qf) * sin).to(q.dtype),
            (kf * cos + rotate_half(kf) * sin).to(k.dtype))


def rope_math_bf16(q, k, cache, pos):
    """The same as HF runs it: cos and sin in the model's dtype, the math in it."""
    cos, sin = rope_cos_sin(cache, pos, q.dtype)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def rope_math_(q, k, cache, pos):
    qo, ko = rope_math(q, k, cache, pos)
    q.copy_(qo)
    k.copy_(ko)
    return q, k


def liger_rope(env):
    """(liger_kernel.ops.rope, None) or (None, why not)."""
    if env.device.type != "cuda":
        return None, "skipped: Liger-Kernel's rope is Triton (cuda only)"
    try:
        import liger_kernel.ops.rope as lr

        return lr, None
    except Exception as e:  # noqa: BLE001
        return None, f"missing: liger_kernel.ops.rope not importable ({short(e)})"


def op_rope(env):
    b, s, hq, d = env.pick((4, 4096, 32, 128), (1, 4096, 32, 128), (2, 16, 4, 32))
    r = d  # rotary_dim: the whole head (rope_math assumes it)
    t = b * s
    cache = rope_cache(s, r, env.device)
    pos = torch.arange(s, dtype=torch.int64).repeat(b).to(env.device)
    # Liger's cos/sin [1, S, R] f32 (f32 so that its kernel does fp32 math, as kiln and eager):
    # HF computes them once a forward for every layer, so they are built here, untimed.
    cos_l, sin_l = (x.transpose(0, 1).contiguous() for x in rope_cos_sin(cache, pos[:s]))
    lr, liger_err = liger_rope(env)

    def liger(q, k, cache, pos):
        # [T, H, D] views -> [B, H, S, D] (Liger's layout: a transpose of [B, S, H, D]). Its
        # rope_forward calls .contiguous() on [B, S, H, D]: the fused views' token stride is not
        # H D, so q and k are copied (in the timed call) and the copies rotated in place.
        qo, ko = lr.LigerRopeFunction.apply(q.view(b, s, q.shape[1], d).transpose(1, 2),
                                            k.view(b, s, k.shape[1], d).transpose(1, 2),
                                            cos_l, sin_l)
        return (qo.transpose(1, 2).reshape(t, q.shape[1], d),
                ko.transpose(1, 2).reshape(t, k.shape[1], d))

    def liger_kernel_(q, k, cache, pos):
        # Liger 0.8.5's _triton_rope launched as its rope_forward does, on the fused views in
        # place: row stride = the token stride, heads assumed D apart (true of these views).
        import triton

        p2 = triton.next_power_of_2
        nq, nk = q.shape[1], k.shape[1]
        assert q.stride(1) == d and k.stride(1) == d and q.stride(2) == 1 and k.stride(2) == 1
        lr._triton_rope[(t,)](q, q.stride(0), k, k.stride(0), cos_l, cos_l.stride(-2), sin_l,
                              sin_l.stride(-2), s, b, cos_l.shape[0], nq, nk, d, p2(nq), p2(nk),
                              p2(d), p2(r), r, BLOCK_SIZE=max(p2(nq), p2(nk)),
                              BACKWARD_PASS=False)
        return q, k

    comp, comp_ = env.compiled(rope_math), env.compiled(rope_math_)
    kiln = env.kiln_fn("rope", ["rope"], lambda kl: lambda q, k, c, p: kl.rope(q, k, c, p,
                                                                               "neox", r))
    kiln_ = env.kiln_fn("rope_", ["rope_inplace"], lambda kl: lambda q, k, c, p: kl.rope_(
        q, k, c, p, "neox", r))
    for hk in env.pick((8, 32), (8, 32), (2, 4)):
        width = (hq + 2 * hk) * d
        shape = f"q [{t}, {hq}, {d}], k [{t}, {hk}, {d}] in qkv [{t}, {width}]"

        def views(qkv):
            return (qkv[:, : hq * d].unflatten(1, (hq, d)),
                    qkv[:, hq * d: (hq + hk) * d].unflatten(1, (hk, d)))

        # Out of place: q and k are leaves (views of a buffer that needs no grad), so autograd
        # hands back dq and dk alone, not a zero-filled dqkv.
        q, k = (v.requires_grad_() for v in views(env.randn(t, width)))
        dq0, dk0 = env.randn(t, hq, d), env.randn(t, hk, d)
        dq, dk = dq0.clone(), dk0.clone()  # timing's gouts (Liger's backward rotates them in place)
        io = 2 * nbytes(q, k) + t * r * cache.element_size() + nbytes(pos)
        impls = {"eager": rope_math, "eager_bf16": rope_math_bf16, "compile": comp,
                 "liger": liger if lr is not None else liger_err, "kiln": kiln}
        # Each check gets fresh copies of the incoming gradients, for the same reason.
        check = against_eager(rope_math, lambda fn, q=q, k=k, a=dq0, g=dk0: fwd_bwd(
            fn, (q, k, cache, pos), [q, k], [a.clone(), g.clone()]),
            ["q_out", "k_out", "dq", "dk"], TOL[q.dtype])
        yield case("rope", f"{shape} neox R={r}", impls, (q, k, cache, pos), io, check,
                   leaves=[q, k], gouts=[dq, dk], bwd_bytes=io)
        del q, k, dq, dk, dq0, dk0

        # In place on the fused buffer (no autograd).
        qkv0 = env.randn(t, width)
        qkv = qkv0.clone()
        qi, ki = views(qkv)
        memo = {}

        def result(fn, qkv=qkv, qkv0=qkv0, qi=qi, ki=ki):
            qkv.copy_(qkv0)
            fn(qi, ki, cache, pos)
            return qkv[:, : hq * d].clone(), qkv[:, hq * d: (hq + hk) * d].clone()

        def check_(fn, qkv=qkv, qkv0=qkv0, result=result, memo=memo, width=width):
            if "ref" not in memo:
                memo["ref"] = result(rope_math_)
            got = result(fn)
            verdict, errs = compare(["q", "k"], got, memo["ref"], TOL[qkv.dtype])
            v2, e2 = compare(["v"], (qkv[:, (hq + hk) * d:],), (qkv0[:, (hq + hk) * d:],), 0,
                             True)
            errs.update(e2)
            bad = [x.removeprefix("MISMATCH ") for x in (verdict, v2) if x != "ok"]
            return ("ok" if not bad else "MISMATCH " + "; ".join(bad)), errs

        def restore(qkv=qkv, qkv0=qkv0):
            qkv.copy_(qkv0)

        impls_ = {"eager": rope_math_, "compile": comp_,
                  "liger_kernel": liger_kernel_ if lr is not None else liger_err, "kiln": kiln_}
        yield case("rope_", f"{shape} neox R={r}, in place", impls_, (qi, ki, cache, pos), io,
                   check_, restore=restore)


OP_FUNCS = {"bias_dropout_add": op_bias_dropout_add, "moe_sum": op_moe_sum,
            "sinkhorn_knopp": op_sinkhorn_knopp, "mhc_mix": op_mhc_mix,
            "gather_rows": op_gather_rows, "kv_cache_write": op_kv_cache_write,
            "tau_tail": op_tau_tail, "rope": op_rope, "topk": op_topk,
            "router": op_router, "hash_router": op_hash_router, "dense_router": op_dense_router}


# ---- timing ----


def copy_ceiling(timer, device):
    """(GB/s, ms, bytes) of a device-to-device copy, read + written."""
    src = torch.zeros(1 << 30 if timer.cuda else 1 << 24, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = timer.measure(lambda _: dst.copy_(src), reps=30)
    return 2 * src.numel() / 1e9 / (ms / 1e3), ms, 2 * src.numel()


def one_kernel_floor(timer, device, reps):
    """GPU ms of one tiny kernel (fill_ of a 1-element tensor) timed as the cases are: the least a
    single-launch op can show here, so small-shape ratios can be read against it."""
    one = torch.empty(1, device=device)
    return timed(timer, device, lambda _: one.fill_(0.0), None, reps)[0]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def launched_ms(run, setup, device, reps):
    """Median wall time of run(setup()) issued to an idle device (host overhead included)."""
    times = []
    for _ in range(reps):
        st = setup() if setup else None
        sync(device)
        t = time.perf_counter()
        out = run(st)
        sync(device)
        times.append((time.perf_counter() - t) * 1e3)
        del out, st
    return statistics.median(times)


def timed(timer, device, run, setup, reps):
    """(gpu median ms, launched median ms). The setup also queues a GPU sleep longer than the
    call's host time, so that the events see the GPU work, not the host's launch gaps."""
    launched = launched_ms(run, setup, device, 5 if device.type == "cuda" else 2)
    cycles = int(min(5.0, 1.5 * launched + 0.02) * 1e-3 * 2e9)

    def busy():
        st = setup() if setup else None
        if timer.cuda:
            torch.cuda._sleep(cycles)
        return st

    return timer.measure(run, setup=busy, reps=reps), launched


def run_case(c, timer, device, reps, roof):
    rows, leaves = [], c["leaves"]
    restore = c["restore"]
    for impl, fn in c["impls"].items():
        row = dict(op=c["op"], shape=c["shape"], impl=impl, fwd_bytes=c["fwd_bytes"],
                   bwd_bytes=c["bwd_bytes"])
        rows.append(row)
        if isinstance(fn, str):
            row["status"] = fn
            print(f"{c['op']:16s} {impl:12s} {fn}", file=sys.stderr)
            continue
        try:
            t0 = time.perf_counter()
            row["check"], row["errors"] = c["check"](fn)
            sync(device)
            row["first_call_s"] = time.perf_counter() - t0
            if row["check"] != "ok":
                print(f"\n!!!!! CHECK FAILED: {c['op']} {c['shape']} {impl}: {row['check']}\n"
                      f"!!!!! errors: {row['errors']}\n", file=sys.stderr)

            def fwd(_, fn=fn):
                return fn(*c["inputs"])

            row["fwd_ms"], row["fwd_launched_ms"] = timed(timer, device, fwd, restore, reps)
            row["fwd_copy"] = c["fwd_bytes"] / 1e9 / (row["fwd_ms"] / 1e3) / roof
            if leaves:
                def bwd(outs):
                    return torch.autograd.grad(as_tuple(outs), leaves, c["gouts"])

                row["bwd_ms"], row["bwd_launched_ms"] = timed(
                    timer, device, bwd, lambda fn=fn: fn(*c["inputs"]), reps)
                row["bwd_copy"] = c["bwd_bytes"] / 1e9 / (row["bwd_ms"] / 1e3) / roof
            row["status"] = "ok"
        except Exception as e:  # noqa: BLE001
            row["status"] = "failed: " + short(e)
            print(f"\n!!!!! FAILED: {c['op']} {c['shape']} {impl}: {row['status']}\n",
                  file=sys.stderr)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(f"{c['op']:16s} {impl:12s} {row['status']:6s} " + cell(row, "fwd") + " | "
              + cell(row, "bwd") + f" | check {row.get('check', '-')}", file=sys.stderr)
    add_ratios(rows)
    return rows


def add_ratios(rows):
    """peer/kiln on the kiln row: best ok peer's median over kiln's, per phase and timing."""
    kiln = next((r for r in rows if r["impl"] == "kiln" and r["status"] == "ok"), None)
    peers = [r for r in rows if r["impl"] != "kiln" and r["status"] == "ok"]
    if kiln is None or not peers:
        return
    for ph in ("fwd", "bwd"):
        for key in (f"{ph}_ms", f"{ph}_launched_ms"):
            have = [p for p in peers if p.get(key)]
            if kiln.get(key) and have:
                best = min(have, key=lambda p: p[key])
                kiln[f"best_peer_{key}"] = best["impl"]
                kiln[f"ratio_{key}"] = best[key] / kiln[key]


def cell(r, ph):
    if r.get(f"{ph}_ms") is None:
        return "-"
    return f"{r[f'{ph}_ms']:.4f} ({r[f'{ph}_copy']:.0%})"


def ratio(r, ph, key="ms"):
    v = r.get(f"ratio_{ph}_{key}")
    return f"{v:.2f}" if v is not None else "-"


def report(rows, args, ceiling, reps, device_name, commit, floor):
    roof, copy_ms, copy_bytes = ceiling
    lines = [f"# Ops peers: {device_name}", "",
             f"- commit {commit}, torch {torch.__version__}, copy ceiling {roof:.0f} GB/s "
             f"({copy_bytes >> 20} MiB moved in {copy_ms:.3f} ms), "
             f"median of {reps}{', --quick' if args.quick else ''}",
             "- ms = GPU time (events; queue pre-filled, L2 flushed); launched = one call from an "
             "idle GPU, host included; % = of the copy ceiling (bytes: see the script's docstring)",
             "- bwd = torch.autograd.grad on a fresh forward's graph; peer/kiln = best peer / kiln "
             "(>= 1: kiln wins), on ms and on launched",
             f"- floor: one tiny kernel (fill_ of one element) measures {floor:.4f} ms here, the "
             "least any single-launch op can show", "",
             "| op | shape | impl | fwd ms (% copy) | bwd ms (% copy) | launched fwd, bwd ms "
             "| peer/kiln fwd, bwd | launched peer/kiln fwd, bwd | check |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['op']} | {r['shape']} | {r['impl']} | {r['status']} | | | | | |")
            continue
        la = ", ".join(f"{r[k]:.4f}" for k in ("fwd_launched_ms", "bwd_launched_ms") if r.get(k))
        rr = rl = ""
        if r["impl"] == "kiln":
            rr = f"{ratio(r, 'fwd')}, {ratio(r, 'bwd')}"
            rl = f"{ratio(r, 'fwd', 'launched_ms')}, {ratio(r, 'bwd', 'launched_ms')}"
        chk = r.get("check", "-")
        chk = "ok" if chk == "ok" else f"**{chk}**"
        lines.append(f"| {r['op']} | {r['shape']} | {r['impl']} | {cell(r, 'fwd')} "
                     f"| {cell(r, 'bwd')} | {la} | {rr} | {rl} | {chk} |")
    fails = [r for r in rows if r.get("check", "ok") != "ok" or r["status"].startswith("failed")]
    if fails:
        lines += ["", "## CHECK FAILURES (or calls that raised)", ""]
        lines += [f"- {r['op']} {r['shape']} {r['impl']}: {r.get('check') or r['status']}"
                  for r in fails]
    first = [r for r in rows if r["impl"] == "compile" and r.get("first_call_s")]
    if first:
        lines += ["", "torch.compile first call (compile + check), s: "
                  + ", ".join(f"{r['op']} {r['shape']} {r['first_call_s']:.1f}" for r in first)]
    return "\n".join(lines) + "\n", fails


def main():
    args = parse_args()
    device = torch.device(args.device)
    env = Env(args, device)
    for name in ("recompile_limit", "cache_size_limit"):  # a compiled fn per shape and dtype
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))
    timer = Timer(device)
    reps = {"full": args.reps, "quick": 20, "cpu": 3}[env.size]
    ceiling = copy_ceiling(timer, device)
    roof = ceiling[0]
    floor = one_kernel_floor(timer, device, reps)
    print(f"ceiling: copy {roof:.0f} GB/s", file=sys.stderr)
    rows = []
    for op in args.ops:
        try:
            for c in OP_FUNCS[op](env):
                rows += run_case(c, timer, device, reps, roof)
                del c
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001  (making the inputs failed: out of memory, ...)
            rows.append(dict(op=op, shape="-", impl="-", status="failed: " + short(e)))
            print(f"{op}: failed: {short(e)}", file=sys.stderr)
    device_name = torch.cuda.get_device_name() if timer.cuda else "cpu"
    commit = args.commit or git_commit()
    text, fails = report(rows, args, ceiling, reps, device_name, commit, floor)
    print(text)
    if fails:
        print(f"!!!!! {len(fails)} CHECK FAILURE(S): see the table", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ops_peers.md").write_text(text)
        (out / "ops_peers.json").write_text(json.dumps(
            {"commit": commit, "device": device_name, "torch": torch.__version__,
             "roof_GBps": roof, "copy_ms": ceiling[1], "copy_bytes": ceiling[2], "reps": reps,
             "floor_ms": floor,
             "quick": args.quick,
             "ops": args.ops, "kiln_error": env.kiln_err,
             "check_failures": [{k: r.get(k) for k in ("op", "shape", "impl", "status", "check",
                                                       "errors")} for r in fails],
             "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
