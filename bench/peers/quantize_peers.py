#!/usr/bin/env python3
"""Side-by-side benchmark of FP8 quantization: kiln vs its peers, one process.

bf16 x [M, N] -> e4m3 values + fp32 scales, per 1x128 group, per tensor (dynamic), per row and per
128x128 block; and the group dequantization back to bf16. Implementations:
  eager    the plain math in torch (amax, clamp(1e-4), scale = amax / 448, x * (1 / scale),
           clamp to +-448, .to(float8_e4m3fn)) -- kiln's contract
  compile  torch.compile of the same math (dynamic=False, default mode)
  kiln     kiln.quantize_fp8 / kiln.dequantize_fp8
Each implementation's values and scales are compared with eager's (the same fp32 math: they
should agree bit for bit; the table gives the share of differing value bytes).
Timing, arguments, ceiling and output files: bench/peers/activation_peers.py's (CUDA events, L2
flushed, median of --reps).
Bytes: x read + values written + scales written (per tensor: x counted once).

Usage: python3 bench/peers/quantize_peers.py [--quick] [--out DIR] [--commit SHA]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from activation_peers import setup, write_results  # noqa: E402

FP8 = torch.float8_e4m3fn
FMAX = 448.0


def _quantize_tiles(x, tiles, amax_dims):
    """x seen as `tiles` (a view of x.float()), one scale per reduction over amax_dims."""
    amax = tiles.abs().amax(dim=amax_dims, keepdim=True).clamp(min=1e-4)
    scale = amax / FMAX
    q = (tiles * (1.0 / scale)).clamp(-FMAX, FMAX).to(FP8)
    return q.reshape(x.shape), scale


def math_group(x):
    m, n = x.shape
    q, s = _quantize_tiles(x, x.float().view(m, n // 128, 128), (2,))
    return q, s.view(m, n // 128)


def math_tensor(x):
    q, s = _quantize_tiles(x, x.float(), (0, 1))
    return q, s.view(1)


def math_row(x):
    return _quantize_tiles(x, x.float(), (1,))


def math_block(x):
    m, n = x.shape
    q, s = _quantize_tiles(x, x.float().view(m // 128, 128, n // 128, 128), (1, 3))
    return q, s.view(m // 128, n // 128)


def math_dequant_group(qs):
    q, s = qs
    m, n = q.shape
    return (q.float().view(m, n // 128, 128) * s.view(m, n // 128, 1)).view(m, n).to(torch.bfloat16)


CASES = {
    "group": (math_group, lambda k: lambda x: k.quantize_fp8(x)),
    "tensor": (math_tensor, lambda k: lambda x: k.quantize_fp8(x, granularity="tensor")),
    "row": (math_row, lambda k: lambda x: k.quantize_fp8(x, granularity="row")),
    "block": (math_block, lambda k: lambda x: k.quantize_fp8(x, granularity="block")),
    "dequant_group": (math_dequant_group, lambda k: lambda qs: k.dequantize_fp8(*qs)),
}


def differing_share(got, want):
    """Share of differing bytes between two outputs (tuples compare their first element)."""
    g = got[0] if isinstance(got, tuple) else got
    w = want[0] if isinstance(want, tuple) else want
    return (g.view(torch.uint8) != w.view(torch.uint8)).float().mean().item()


def main():
    args, device, kiln, timer, reps, m, n, roof = setup((4096, 8192), (256, 512))
    x = (torch.randn(m, n, generator=torch.Generator().manual_seed(0)) * 2).to(device, torch.bfloat16)
    scale_elems = {"group": m * n // 128, "tensor": 1, "row": m, "block": m * n // 128 // 128,
                   "dequant_group": m * n // 128}
    rows = []
    for case, (math, kiln_fn) in CASES.items():
        inp = math_group(x) if case == "dequant_group" else x
        impls = {"eager": math, "compile": torch.compile(math, dynamic=False)}
        if kiln is not None:
            impls["kiln"] = kiln_fn(kiln)
        want = math(inp)
        nbytes = 3 * m * n + 4 * scale_elems[case]
        for name, fn in impls.items():
            diff = differing_share(fn(inp), want)
            ms = timer.measure(lambda _: fn(inp), reps=reps)
            rows.append({"case": case, "impl": name, "ms": ms, "roof": nbytes / 1e9 / (ms / 1e3) / roof,
                         "differing_bytes": diff})
            print(f"{case:14s} {name:8s} {ms:.4f} ms ({rows[-1]['roof']:.0%}) differ {diff:.1e}",
                  file=sys.stderr)
    lines = [f"# FP8 quantization peers: {torch.cuda.get_device_name() if timer.cuda else 'cpu'}", "",
             f"- commit {args.commit}, torch {torch.__version__}, bf16 [{m}, {n}] -> e4m3, "
             f"copy ceiling {roof:.0f} GB/s, median of {reps}", "",
             "| case | impl | ms (% of copy) | value bytes differing from eager | best peer / kiln |",
             "|---|---|---|---|---|"]
    for case in CASES:
        mine = [r for r in rows if r["case"] == case]
        k = next((r for r in mine if r["impl"] == "kiln"), None)
        peers = [r for r in mine if r["impl"] != "kiln"]
        for r in mine:
            ratio = f"{min(p['ms'] for p in peers) / k['ms']:.2f}" if r is k and peers else ""
            lines.append(f"| {case} | {r['impl']} | {r['ms']:.4f} ({r['roof']:.0%}) | "
                         f"{r['differing_bytes']:.1e} | {ratio} |")
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(args.out, "quantize_peers", text, {"roof_GBps": roof, "rows": rows})


if __name__ == "__main__":
    main()
