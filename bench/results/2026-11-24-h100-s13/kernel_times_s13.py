"""s13: per-kernel GPU times (torch.profiler) of kiln's gather / rope / rms_norm against the peers'
kernels: how much of the gaps in the peer tables is the kernel, and how much the launches around it
(the bad-count zero fill). One-off lab script (.carry, not committed)."""
import sys
import torch
from torch.profiler import ProfilerActivity, profile
sys.path.insert(0, "bench/peers")
import kiln
import ops_peers as op

dev = "cuda"


def times(tag, f, reps=20):
    f(); torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            f()
        torch.cuda.synchronize()
    print(f"{tag}: GPU time per call over {reps}")
    tot = 0.0
    for e in sorted(prof.key_averages(), key=lambda e: -e.device_time_total):
        if e.device_time_total > 0:
            tot += e.device_time_total / reps
            print(f"  {e.device_time_total / reps / 1e3:8.4f} ms  x{e.count // reps}  {e.key[:90]}")
    print(f"  {tot / 1e3:8.4f} ms  total")


n, m = 65536, 32768
src = torch.randn(n, 8, 128, device=dev, dtype=torch.bfloat16)
idx = torch.randperm(n, device=dev)[:m].to(torch.int32)
times("gather kiln", lambda: kiln.gather_rows(src, idx))
times("gather index_select", lambda: src.index_select(0, idx))

t, hq, hk, d = 16384, 32, 8, 128
cache = op.rope_cache(4096, d, dev)
pos = torch.arange(4096, dtype=torch.int64).repeat(4).to(dev)
qkv = torch.randn(t, (hq + 2 * hk) * d, device=dev, dtype=torch.bfloat16)
q = qkv[:, : hq * d].unflatten(1, (hq, d))
k = qkv[:, hq * d: (hq + hk) * d].unflatten(1, (hk, d))
times("rope_ kiln in place", lambda: kiln.rope_(q, k, cache, pos, "neox", d))
dq = torch.randn(t, hq, d, device=dev, dtype=torch.bfloat16)
dk = torch.randn(t, hk, d, device=dev, dtype=torch.bfloat16)
times("rope kiln out of place (contiguous, as the backward)", lambda: kiln.rope(dq, dk, cache, pos, "neox", d))
try:
    import liger_kernel.ops.rope as lr
    import triton
    cos_l, sin_l = (x.transpose(0, 1).contiguous() for x in op.rope_cos_sin(cache, pos[:4096]))
    p2 = triton.next_power_of_2

    def liger_(q, k):
        lr._triton_rope[(t,)](q, q.stride(0), k, k.stride(0), cos_l, cos_l.stride(-2), sin_l,
                              sin_l.stride(-2), 4096, 4, cos_l.shape[0], hq, hk, d, p2(hq), p2(hk),
                              p2(d), p2(d), d, BLOCK_SIZE=max(p2(hq), p2(hk)), BACKWARD_PASS=False)
    times("rope_ liger kernel in place", lambda: liger_(q, k))
    times("rope liger kernel in place on contiguous (as its backward)", lambda: liger_(dq, dk))
except Exception as e:  # noqa: BLE001
    print("liger:", e)

x = torch.randn(16384, 8192, device=dev, dtype=torch.bfloat16)
w = torch.randn(8192, device=dev, dtype=torch.bfloat16)
times("rms_norm 8192 kiln", lambda: kiln.rms_norm(x, w, 1e-6))
comp = torch.compile(lambda x, w: (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * w, dynamic=False)
times("rms_norm 8192 compile", lambda: comp(x, w))
y = torch.empty_like(x)
times("copy 16384x8192 bf16", lambda: y.copy_(x))
