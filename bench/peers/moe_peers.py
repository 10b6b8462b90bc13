#!/usr/bin/env python3
"""Side-by-side benchmark of the MoE expert path at DeepSeek-V3 shapes (H = 7168, I = 2048,
E = 256, k = 8, swiglu, bf16): kiln.fused_moe against torch's own grouped matmul, with the dense
bf16 GEMM rate measured in the same run.

  dense        torch.mm 8192^3 bf16: the compute ceiling
  grouped_mm   torch._grouped_mm: rows sorted by expert (argsort, outside the timing), up GEMM,
               silu(gate) * up, down GEMM, weights, index_add back to the tokens
  kiln         kiln.fused_moe(x, w13, w2, weights, ids) (align, gather, both GEMMs, combine)
  kiln w8a16   (decode) the same weights as e4m3 with 128 x 128 block scales (GEMV kernels);
               its GB/s counts one byte a weight plus the scales, its rel L2 includes the
               quantisation error
  kiln w8a8    (prefill, T = 64) the same e4m3 weights, x and the intermediate quantised to e4m3
               in 1 x 128 groups (fp8_activations=True), both GEMMs on FP8 wgmma
TFLOP/s counts 2 * T * k * H * (2I + I) * 2 / 2 = the two GEMMs' multiply-adds (6 T k H I).
Outputs compared with grouped_mm's (relative L2). Prefill T = 8192; decode T in {1, 16, 64}
reports GB/s over the expert weights actually touched (quick: prefill at T = 2048 only).

At the prefill shape, also kiln with both GEMMs on one tile (KILN_GROUPED_GEMM_TILE=n256, n128x2);
at the decode shapes, kiln with each path forced (KILN_FUSED_MOE=gemv, grouped); and a
table of where kiln's time goes (torch.profiler, CUDA time per kernel of one call).

Usage: python3 bench/peers/moe_peers.py [--quick] [--out DIR] [--commit SHA]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from activation_peers import Timer, load_kiln, parse_args, write_results  # noqa: E402

H, I, E, K = 7168, 2048, 256, 8


def routed(t, gen, dev):
    ids = torch.stack([torch.randperm(E, generator=gen)[:K] for _ in range(t)]).to(torch.int32)
    w = torch.rand(t, K, generator=gen)
    return (w / w.sum(1, keepdim=True)).to(dev), ids.to(dev)


def grouped_mm_layer(x, w13, w2, weights, ids):
    """torch's grouped matmul path, the sort done before (returned as a closure)."""
    t = x.shape[0]
    flat = ids.flatten().long()
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=E)
    offs = torch.cumsum(counts, 0).to(torch.int32)
    token_of = order // K
    w_sorted = weights.flatten()[order].unsqueeze(1)
    w13_t = w13.transpose(1, 2)  # [E, H, 2I]
    w2_t = w2.transpose(1, 2)    # [E, I, H]

    def run():
        xs = x[token_of]
        h = torch._grouped_mm(xs, w13_t, offs=offs)
        h = torch.nn.functional.silu(h[:, :I]) * h[:, I:]
        y = torch._grouped_mm(h, w2_t, offs=offs) * w_sorted.to(h.dtype)
        out = torch.zeros(t, H, device=x.device, dtype=torch.float32)
        out.index_add_(0, token_of, y.float())
        return out.to(x.dtype)
    return run


def with_env(name, value, fn):
    def run():
        old = os.environ.get(name)
        os.environ[name] = value
        try:
            return fn()
        finally:
            if old is None:
                del os.environ[name]
            else:
                os.environ[name] = old
    return run


def kernel_times(fn, calls=5):
    """CUDA time per kernel name over one call of fn (mean of `calls`), longest first."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    out = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            out[e.name] = out.get(e.name, 0.0) + e.device_time / 1e3 / calls
    return sorted(out.items(), key=lambda kv: -kv[1])


def main():
    args = parse_args()
    kiln = load_kiln()
    timer = Timer(torch.device("cuda"))
    reps = 5 if args.quick else 20
    dev = "cuda"
    gen = torch.Generator().manual_seed(3)
    w13 = (torch.randn(E, 2 * I, H, generator=gen) * 0.02).to(dev, torch.bfloat16)
    w2 = (torch.randn(E, H, I, generator=gen) * 0.02).to(dev, torch.bfloat16)
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    dense_ms = timer.measure(lambda _: a @ a, reps=reps)
    dense = 2 * 8192 ** 3 / dense_ms / 1e9
    del a
    src = torch.empty(1 << 29, device=dev, dtype=torch.bfloat16)  # 1 GiB
    dst = torch.empty_like(src)
    copy_ms = timer.measure(lambda _: dst.copy_(src), reps=reps)
    copy = 2 * src.numel() * 2 / copy_ms / 1e6  # GB/s, bytes read + written
    del src, dst
    print(f"dense bf16 GEMM: {dense:.0f} TFLOP/s, copy {copy:.0f} GB/s", file=sys.stderr)
    w13_8 = w2_8 = s13 = s2 = None
    if kiln is not None:
        w13_8, s13 = kiln.quantize_fp8(w13.view(E * 2 * I, H), granularity="block")
        w2_8, s2 = kiln.quantize_fp8(w2.view(E * H, I), granularity="block")
        w13_8, w2_8 = w13_8.view(E, 2 * I, H), w2_8.view(E, H, I)
        s13, s2 = s13.view(E, 2 * I // 128, H // 128), s2.view(E, H // 128, I // 128)
    rows = []
    # MOE_PEERS_T="64,16,1" picks the token counts (a decode-only run skips the slow prefill).
    chosen = [int(v) for v in os.environ.get("MOE_PEERS_T", "").split(",") if v]
    for t in chosen or ([2048] if args.quick else [8192, 64, 16, 1]):
        x = torch.randn(t, H, generator=gen).to(dev, torch.bfloat16)
        weights, ids = routed(t, gen, dev)
        impls = {"grouped_mm": grouped_mm_layer(x, w13, w2, weights, ids)}
        if kiln is not None:
            impls["kiln"] = lambda: kiln.fused_moe(x, w13, w2, weights, ids)
            if t * K >= 1024:
                for tile in ("n256", "n128x2"):
                    impls[f"kiln {tile}"] = with_env("KILN_GROUPED_GEMM_TILE", tile, impls["kiln"])
            else:
                impls["kiln gemv"] = with_env("KILN_FUSED_MOE", "gemv", impls["kiln"])
                impls["kiln grouped"] = with_env("KILN_FUSED_MOE", "grouped", impls["kiln"])
        if kiln is not None and t * K < 1024:
            # w8a16: the same weights as e4m3 with 128 x 128 block scales (kiln.quantize_fp8 over
            # the [E * rows, cols] views: rows are multiples of 128, so the blocks are per expert).
            impls["kiln w8a16"] = lambda: kiln.fused_moe(x, w13_8, w2_8, weights, ids,
                                                         w13_scale=s13, w2_scale=s2)
            if t >= 2:  # each GEMV path forced: per pick, and by expert (MMA at these shapes)
                impls["kiln w8a16 per-pick"] = with_env("KILN_FUSED_MOE", "gemv",
                                                        impls["kiln w8a16"])
                impls["kiln w8a16 by-expert"] = with_env("KILN_FUSED_MOE", "gemv_experts",
                                                         impls["kiln w8a16"])
        if kiln is not None and (t * K >= 1024 or t == 64):
            # w8a8: the same e4m3 weights, x and the intermediate quantized in 1 x 128 groups,
            # both GEMMs on FP8 wgmma (the bar: >= 1.5x the bf16 path at prefill).
            impls["kiln w8a8"] = lambda: kiln.fused_moe(x, w13_8, w2_8, weights, ids,
                                                        w13_scale=s13, w2_scale=s2,
                                                        fp8_activations=True)
        touched = len(torch.unique(ids))
        wbytes = touched * 3 * I * H * 2
        flops = 6.0 * t * K * H * I
        want = None
        for label, fn in impls.items():
            try:
                out = fn()
                if want is None:
                    want = out.float()
                err = ((out.float() - want).norm() / want.norm()).item()
                ms = timer.measure(lambda _: fn(), reps=reps)
                variant = kiln.last_receipt().variant if label.startswith("kiln") else ""
                # FP8 weights: one byte an element, plus the touched experts' block scales.
                nbytes = (touched * 3 * I * H + touched * 3 * I * H // (128 * 128) * 4
                          if "w8a" in label else wbytes)
                rows.append({"T": t, "impl": label, "ms": ms, "tflops": flops / ms / 1e9,
                             "share_dense": flops / ms / 1e9 / dense,
                             "weight_gbps": nbytes / ms / 1e6,
                             "share_copy": nbytes / ms / 1e6 / copy, "rel_l2": err,
                             "variant": variant})
                print(f"T={t:5d} {label:10s} {ms:8.3f} ms {flops / ms / 1e9:6.1f} TFLOP/s "
                      f"weights {nbytes / ms / 1e6:7.0f} GB/s rel_l2 {err:.2e} {variant}",
                      file=sys.stderr)
            except Exception as e:  # noqa: BLE001 -- reported, the others still run
                print(f"T={t:5d} {label:10s} failed: {str(e).splitlines()[0][:160]}",
                      file=sys.stderr)
                rows.append({"T": t, "impl": label, "error": str(e).splitlines()[0][:160]})
    lines = [f"# MoE expert path peers: {torch.cuda.get_device_name()}", "",
             f"- commit {args.commit}, torch {torch.__version__}, bf16, H {H}, I {I}, E {E}, "
             f"k {K}, median of {reps}; dense bf16 GEMM {dense:.0f} TFLOP/s, 1 GiB copy "
             f"{copy:.0f} GB/s (same run)", "",
             "| T | impl | ms | TFLOP/s | % of dense | weight GB/s | % of copy | rel L2 vs grouped_mm "
             "| kernel |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "ms" in r:
            lines.append(f"| {r['T']} | {r['impl']} | {r['ms']:.3f} | {r['tflops']:.0f} | "
                         f"{100 * r['share_dense']:.0f}% | {r['weight_gbps']:.0f} | "
                         f"{100 * r['share_copy']:.0f}% | {r['rel_l2']:.2e} | {r['variant']} |")
        else:
            lines.append(f"| {r['T']} | {r['impl']} | failed: {r['error']} | | | | | | |")
    # MOE_PEERS_PROFILE=1 adds the breakdown to a run with MOE_PEERS_T set.
    if kiln is not None and not args.quick and (not chosen or os.environ.get("MOE_PEERS_PROFILE")):
        for t, label in ((8192, "bf16"), (8192, "w8a8"), (64, "bf16")):
            x = torch.randn(t, H, generator=gen).to(dev, torch.bfloat16)
            weights, ids = routed(t, gen, dev)
            lines += ["", f"Where kiln's {label} time goes at T = {t} (CUDA ms per call, "
                      "torch.profiler):", "", "| kernel | ms |", "|---|---|"]
            if label == "w8a8":
                call = lambda: kiln.fused_moe(x, w13_8, w2_8, weights, ids, w13_scale=s13,  # noqa: E731
                                              w2_scale=s2, fp8_activations=True)
            else:
                call = lambda: kiln.fused_moe(x, w13, w2, weights, ids)  # noqa: E731
            for name, ms in kernel_times(call):
                lines.append(f"| {name[:120]} | {ms:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(args.out, "moe_peers", text, rows)


if __name__ == "__main__":
    main()
