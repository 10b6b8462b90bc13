#!/usr/bin/env python3
"""GPU time of each kiln attention kernel (forward, delta, dK/dV, dQ) at bf16 B=2, T=8192, H=16,
D=128, causal and not, and causal with 8 documents, from torch.profiler: which launch the time goes to.

Usage (on the GPU machine, kiln's torch package on PYTHONPATH): tools/attention-kernel-times.py
"""
import sys
import zlib
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import kiln

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench" / "peers"))
from attention_peers import doc_lengths  # noqa: E402


def main():
    b, t, h, d = 2, 8192, 16, 128
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b * t, h, d, generator=gen).to("cuda", torch.bfloat16).requires_grad_()
               for _ in range(3))
    cu = torch.arange(0, (b + 1) * t, t, dtype=torch.int32, device="cuda")
    # the 8 documents attention_peers draws for its docs8_d128_T8192_causal case
    gen_docs = torch.Generator().manual_seed(zlib.crc32(b"docs8_d128_T8192_causal"))
    for _ in range(3):  # the generator as the peers leave it after drawing q, k and v
        torch.randn(b, t, h, d, generator=gen_docs)
    lengths = torch.tensor(doc_lengths(t, 8, gen_docs))
    ids = torch.repeat_interleave(torch.arange(len(lengths), dtype=torch.int32),
                                  lengths).to("cuda").repeat(b)
    for causal, docs in ((False, None), (True, None), (True, (ids, ids))):
        kw = {"doc_ids": docs} if docs is not None else {}
        out = kiln.attention_varlen(q, k, v, cu, cu, causal=causal, **kw)
        grad = torch.randn_like(out)
        torch.autograd.grad(out, (q, k, v), grad, retain_graph=True)  # warm-up
        torch.cuda.synchronize()
        reps = 5
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                out = kiln.attention_varlen(q, k, v, cu, cu, causal=causal, **kw)
                torch.autograd.grad(out, (q, k, v), grad, retain_graph=True)
            torch.cuda.synchronize()
        label = f"causal={causal}" + (f", documents {lengths.tolist()}" if docs else "")
        print(f"{label}: mean GPU time per call over {reps} calls")
        for e in sorted(prof.key_averages(), key=lambda e: -e.device_time_total):
            if e.device_time_total > 0 and "kiln" in e.key:
                print(f"  {e.device_time_total / reps / 1e3:8.3f} ms  {e.key[:110]}")


if __name__ == "__main__":
    main()
