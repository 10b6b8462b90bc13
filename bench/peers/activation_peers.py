#!/usr/bin/env python3
"""Side-by-side benchmark of relu2 / swiglu / gelu_residual: kiln vs its peers, one process.

Implementations, each forward and backward (torch.autograd.grad), bf16:
  eager    the plain math (torch.relu(x)**2; F.silu(g)*u; F.gelu(h, approximate="tanh")*(g+1))
  compile  torch.compile of the same math (dynamic=False, default mode)
  liger    Liger-Kernel's SiLU-mul (swiglu only; Liger has no relu2 and its GEGLU is a different op)
  kiln     kiln.relu2 / kiln.swiglu(gate_up) / kiln.gelu_residual(hg, approximate="tanh")
The gated ops take the packed [M, 2N] input (the up-projection's output); the peers slice it.
The ceiling is the device-to-device copy bandwidth measured in the same run.

Timing as in norm_peers.py: CUDA events around each call, the GPU kept busy (torch.cuda._sleep)
while the host enqueues it, L2 flushed before every repetition, median of --reps.
Bytes: fwd = input read + y written; bwd = input + dy read + d(input) written.

Usage: python3 bench/peers/activation_peers.py [--quick] [--out DIR] [--commit SHA]
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

from commit import REPO, git_commit


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--out", default=None)
    p.add_argument("--commit", default="")
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    args.commit = args.commit or git_commit()
    return args



class Timer:
    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.flush_buf = torch.empty(256 << 20, dtype=torch.uint8, device=device) if self.cuda else None

    def measure(self, run, setup=None, reps=100, warmup=5):
        for _ in range(warmup):
            st = setup() if setup else None
            run(st)
        if not self.cuda:
            times = []
            for _ in range(reps):
                st = setup() if setup else None
                t = time.perf_counter()
                run(st)
                times.append((time.perf_counter() - t) * 1e3)
            return statistics.median(times)
        torch.cuda.synchronize()
        evs = []
        for i in range(reps):
            st = setup() if setup else None
            self.flush_buf.zero_()
            torch.cuda._sleep(int(50e-6 * 2e9))
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            run(st)
            e.record()
            evs.append((s, e))
            if (i + 1) % 25 == 0:
                torch.cuda.synchronize()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in evs)


def load_kiln():
    """kiln from this checkout's torch/ (or installed), or None with the reason on stderr."""
    sys.path.insert(0, str(REPO / "torch"))
    try:
        import kiln
    except Exception as e:  # noqa: BLE001
        print(f"kiln not importable: {e}", file=sys.stderr)
        return None
    return kiln


def copy_ceiling_gbps(timer, device):
    """Device-to-device copy bandwidth (bytes read + written), the ceiling of the same run."""
    src = torch.zeros(1 << 30 if timer.cuda else 1 << 24, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy_ms = timer.measure(lambda _: dst.copy_(src), reps=30)
    roof = 2 * src.numel() / 1e9 / (copy_ms / 1e3)
    print(f"ceiling: copy {roof:.0f} GB/s", file=sys.stderr)
    return roof


def write_results(out_dir, stem, text, data):
    """<stem>.md (the table) and <stem>.json (the rows) into out_dir, when given."""
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.md").write_text(text)
        (out / f"{stem}.json").write_text(json.dumps(data, indent=1))


def setup(quick_shape, cpu_shape):
    """A peer run's arguments, device, kiln (or None), timer, repetitions, [M, N] (16384 x 8192,
    quick_shape with --quick, cpu_shape on the CPU) and copy ceiling in GB/s."""
    args = parse_args()
    device = torch.device(args.device)
    kiln = load_kiln()
    timer = Timer(device)
    reps = 20 if args.quick else args.reps
    m, n = quick_shape if args.quick else (16384, 8192)
    if device.type == "cpu":
        (m, n), reps = cpu_shape, 5
    return args, device, kiln, timer, reps, m, n, copy_ceiling_gbps(timer, device)


def math_relu2(x):
    return torch.relu(x) ** 2


def math_swiglu(gu):
    n = gu.shape[-1] // 2
    return F.silu(gu[..., :n]) * gu[..., n:]


def math_gelu_residual(hg):
    n = hg.shape[-1] // 2
    return F.gelu(hg[..., :n], approximate="tanh") * (hg[..., n:] + 1)


def impls(op, kiln):
    math = {"relu2": math_relu2, "swiglu": math_swiglu, "gelu_residual": math_gelu_residual}[op]
    out = {"eager": math, "compile": torch.compile(math, dynamic=False)}
    if op == "swiglu":
        try:
            from liger_kernel.ops.swiglu import LigerSiLUMulFunction

            def liger(gu):
                n = gu.shape[-1] // 2
                return LigerSiLUMulFunction.apply(gu[..., :n], gu[..., n:])

            out["liger"] = liger
        except Exception as e:  # noqa: BLE001
            print(f"liger swiglu not available: {e}", file=sys.stderr)
    if kiln is not None:
        out["kiln"] = {
            "relu2": kiln.relu2,
            "swiglu": lambda gu: kiln.swiglu(gu),
            "gelu_residual": lambda hg: kiln.gelu_residual(hg, approximate="tanh"),
        }[op]
    return out


def main():
    args, device, kiln, timer, reps, m, n, roof = setup((1024, 4096), (64, 256))
    rows = []
    gen = torch.Generator().manual_seed(0)
    for op in ("relu2", "swiglu", "gelu_residual"):
        n_in = n if op == "relu2" else 2 * n
        x = (torch.randn(m, n_in, generator=gen) * 2).to(device, torch.bfloat16).requires_grad_()
        dy = torch.randn(m, n, generator=gen).to(device, torch.bfloat16)
        esize = 2
        fwd_bytes = (m * n_in + m * n) * esize
        bwd_bytes = (2 * m * n_in + m * n) * esize
        ref = None
        for name, fn in impls(op, kiln).items():
            y = fn(x)
            (g,) = torch.autograd.grad(y, x, dy)
            if ref is None:
                ref = (y.double(), g.double())
            err = max(
                ((y.double() - ref[0]).norm() / ref[0].norm()).item(),
                ((g.double() - ref[1]).norm() / ref[1].norm()).item(),
            )
            fwd = timer.measure(lambda _: fn(x), reps=reps)
            bwd = timer.measure(
                lambda y_: torch.autograd.grad(y_, x, dy), setup=lambda: fn(x), reps=reps
            )
            rows.append({"op": op, "impl": name, "fwd_ms": fwd, "bwd_ms": bwd, "rel_err_vs_eager": err,
                         "fwd_roof": fwd_bytes / 1e9 / (fwd / 1e3) / roof,
                         "bwd_roof": bwd_bytes / 1e9 / (bwd / 1e3) / roof})
            print(f"{op:14s} {name:8s} fwd {fwd:.4f} ms ({rows[-1]['fwd_roof']:.0%}) "
                  f"bwd {bwd:.4f} ms ({rows[-1]['bwd_roof']:.0%}) err {err:.1e}", file=sys.stderr)
    lines = [f"# Activation peers: {torch.cuda.get_device_name() if timer.cuda else 'cpu'}", "",
             f"- commit {args.commit}, torch {torch.__version__}, bf16, M={m}, N={n} "
             f"(gated inputs [M, 2N]), copy ceiling {roof:.0f} GB/s, median of {reps}", "",
             "| op | impl | fwd ms (% of copy) | bwd ms (% of copy) | best peer / kiln fwd, bwd |",
             "|---|---|---|---|---|"]
    for op in ("relu2", "swiglu", "gelu_residual"):
        mine = [r for r in rows if r["op"] == op]
        k = next((r for r in mine if r["impl"] == "kiln"), None)
        peers = [r for r in mine if r["impl"] != "kiln"]
        for r in mine:
            ratio = ""
            if r is k and peers:
                ratio = (f"{min(p['fwd_ms'] for p in peers) / k['fwd_ms']:.2f}, "
                         f"{min(p['bwd_ms'] for p in peers) / k['bwd_ms']:.2f}")
            lines.append(f"| {op} | {r['impl']} | {r['fwd_ms']:.4f} ({r['fwd_roof']:.0%}) | "
                         f"{r['bwd_ms']:.4f} ({r['bwd_roof']:.0%}) | {ratio} |")
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(args.out, "activation_peers", text, {"roof_GBps": roof, "rows": rows})


if __name__ == "__main__":
    main()
