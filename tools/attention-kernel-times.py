#!/usr/bin/env python3
"""GPU time of each kiln attention kernel (forward, delta, dK/dV, dQ) at bf16 B=2, T=8192, H=16,
D=128, causal and not, from torch.profiler: which launch the time goes to.

Usage (on the GPU machine, kiln's torch package on PYTHONPATH): tools/attention-kernel-times.py
"""
import torch
from torch.profiler import ProfilerActivity, profile

import kiln


def main():
    b, t, h, d = 2, 8192, 16, 128
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b * t, h, d, generator=gen).to("cuda", torch.bfloat16).requires_grad_()
               for _ in range(3))
    cu = torch.arange(0, (b + 1) * t, t, dtype=torch.int32, device="cuda")
    for causal in (False, True):
        out = kiln.attention_varlen(q, k, v, cu, cu, causal=causal)
        grad = torch.randn_like(out)
        torch.autograd.grad(out, (q, k, v), grad, retain_graph=True)  # warm-up
        torch.cuda.synchronize()
        reps = 5
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                out = kiln.attention_varlen(q, k, v, cu, cu, causal=causal)
                torch.autograd.grad(out, (q, k, v), grad, retain_graph=True)
            torch.cuda.synchronize()
        print(f"causal={causal}: mean GPU time per call over {reps} calls")
        for e in sorted(prof.key_averages(), key=lambda e: -e.device_time_total):
            if e.device_time_total > 0 and "kiln" in e.key:
                print(f"  {e.device_time_total / reps / 1e3:8.3f} ms  {e.key[:110]}")


if __name__ == "__main__":
    main()
