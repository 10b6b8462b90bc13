#!/usr/bin/env python3
"""Side-by-side benchmark of the attention forward: kiln vs SDPA (flash, cuDNN) and FlexAttention.

bf16, B*T = 16384 tokens, H*D = 2048 unless said (issue 4's shapes). Implementations:
  sdpa_flash   torch SDPA restricted to its FlashAttention-2 backend
  sdpa_cudnn   torch SDPA restricted to its cuDNN backend
  flex         torch.compile(flex_attention) with a block mask (document and window cases,
               where SDPA has no equivalent mask)
  kiln         kiln.attention_varlen (cu_seqlens built once, outside the timing)
Forward and backward (torch.autograd.grad of q, k, v) are timed. Each output and gradient is
compared with the first peer's (max |difference|). TFLOP/s counts 4 * D * the visible (query,
key) pairs (2.5x that for the backward), which is FlashAttention's 4*B*H*T^2*D (halved for causal) on the
plain cases. Timing and output files: activation_peers.py's (CUDA events, L2 flushed, median).

Usage: python3 bench/peers/attention_peers.py [--quick] [--out DIR] [--commit SHA]
"""

from __future__ import annotations

import os
import sys
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from activation_peers import Timer, load_kiln, parse_args, write_results  # noqa: E402


def doc_lengths(t, n, gen):
    """n random document lengths summing to t (each >= 64)."""
    cuts = sorted(torch.randint(1, t // 64, (n - 1,), generator=gen).unique().tolist())
    cuts = [c * 64 for c in cuts]
    edges = [0] + cuts + [t]
    return [b - a for a, b in zip(edges, edges[1:]) if b > a]


def visible_pairs(t, causal, window, docs):
    """(query, key) pairs one sequence of t tokens attends to."""
    if docs is not None:
        return sum(L * (L + 1) // 2 if causal else L * L for L in docs)
    if window is not None:
        left = window
        return sum(min(i, left) + 1 for i in range(t))
    return t * (t + 1) // 2 if causal else t * t


# kiln variants timed beside the default: the environment each runs under.
IMPL_ENV = {"kiln_mma_sync": {"KILN_ATTENTION_FWD": "mma_sync", "KILN_ATTENTION_BWD": "mma_sync"},
            "kiln_bwd_serial": {"KILN_ATTENTION_BWD_OVERLAP": "0"},
            "kiln_fwd_per_item": {"KILN_ATTENTION_FWD_PERSISTENT": "0"}}


def mma_sync(fn):
    """fn() with kiln forced onto its mma.sync kernels (KILN_ATTENTION_FWD and _BWD)."""
    os.environ["KILN_ATTENTION_FWD"] = os.environ["KILN_ATTENTION_BWD"] = "mma_sync"
    try:
        return fn()
    finally:
        del os.environ["KILN_ATTENTION_FWD"], os.environ["KILN_ATTENTION_BWD"]


def run_case(name, b, t, hq, hkv, d, causal, timer, kiln, reps, window=None, ndocs=0):
    dev = "cuda"
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))  # hash() varies by process
    q = torch.randn(b, t, hq, d, generator=gen).to(dev, torch.bfloat16).requires_grad_()
    k = torch.randn(b, t, hkv, d, generator=gen).to(dev, torch.bfloat16).requires_grad_()
    v = torch.randn(b, t, hkv, d, generator=gen).to(dev, torch.bfloat16).requires_grad_()
    docs = doc_lengths(t, ndocs, gen) if ndocs else None
    impls = {}
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, T, D] for torch
    gqa = hq != hkv
    if window is None and docs is None:
        for label, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION),
                               ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
            def sdpa(backend=backend):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal,
                                                          enable_gqa=gqa).transpose(1, 2)
            impls[label] = sdpa
    else:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        doc_of = None
        if docs is not None:
            doc_of = torch.repeat_interleave(torch.arange(len(docs)), torch.tensor(docs)).to(dev)

        def mask_mod(bb, hh, qi, ki):
            ok = qi >= ki
            if window is not None:
                ok = ok & (qi - ki <= window)
            if doc_of is not None:
                ok = ok & (doc_of[qi] == doc_of[ki])
            return ok
        block_mask = create_block_mask(mask_mod, None, None, t, t, device=dev)
        flex = torch.compile(flex_attention, dynamic=False)
        impls["flex"] = lambda: flex(qt, kt, vt, block_mask=block_mask,
                                     enable_gqa=gqa).transpose(1, 2)
    if kiln is not None:
        cu = torch.arange(0, (b + 1) * t, t, dtype=torch.int32, device=dev)
        qf, kf, vf = q.view(b * t, hq, d), k.view(b * t, hkv, d), v.view(b * t, hkv, d)
        kw = {"causal": causal}
        if window is not None:
            kw["window"] = (window, -1)
        if docs is not None:
            ids = torch.repeat_interleave(torch.arange(len(docs), dtype=torch.int32),
                                          torch.tensor(docs)).to(dev).repeat(b)
            kw["doc_ids"] = (ids, ids)
        impls["kiln"] = lambda: kiln.attention_varlen(qf, kf, vf, cu, cu, **kw).view(b, t, hq, d)
        # the mma.sync kernels beside the wgmma ones, in the same run (forward and backward:
        # run_case forces both around everything it times for this label)
        impls["kiln_mma_sync"] = impls["kiln"]
        # the wgmma forward with a CTA a work item (default: one CTA a SM walking them)
        impls["kiln_fwd_per_item"] = impls["kiln"]
        if d <= 128:
            # the wgmma backward with dQ after dK/dV on one stream (default: dQ beside it)
            impls["kiln_bwd_serial"] = impls["kiln"]
    flops = 4.0 * d * b * hq * visible_pairs(t, causal, window, docs)
    rows, want = [], None
    for label, fn in impls.items():
        for var, value in IMPL_ENV.get(label, {}).items():
            os.environ[var] = value
        try:
            out = fn()
            grad = torch.randn_like(out)
            dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad, retain_graph=True)
            if want is None:
                want, want_grads = out.detach(), (dq, dk, dv)
            diff = (out.float() - want.float()).abs().max().item()
            gdiff = max((a.float() - w.float()).abs().max().item()
                        for a, w in zip((dq, dk, dv), want_grads))
            with torch.no_grad():
                ms = timer.measure(lambda _: fn(), reps=reps)
            bwd = timer.measure(lambda _: torch.autograd.grad(out, (q, k, v), grad,
                                                              retain_graph=True), reps=reps)
            if label.startswith("kiln"):
                fn()
                fwd_variant = kiln.last_receipt().variant
                torch.autograd.grad(out, (q, k, v), grad, retain_graph=True)
                print(f"{name:28s} {label:10s} ran {fwd_variant} / {kiln.last_receipt().variant}",
                      file=sys.stderr)
            rows.append({"case": name, "impl": label, "ms": ms, "tflops": flops / ms / 1e9,
                         "max_diff": diff, "bwd_ms": bwd, "bwd_tflops": 2.5 * flops / bwd / 1e9,
                         "bwd_max_diff": gdiff})
            print(f"{name:28s} {label:10s} fwd {ms:8.3f} ms {flops / ms / 1e9:6.1f} TFLOP/s "
                  f"diff {diff:.3g} | bwd {bwd:8.3f} ms {2.5 * flops / bwd / 1e9:6.1f} TFLOP/s "
                  f"diff {gdiff:.3g}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 -- a peer missing on this machine is reported
            print(f"{name:28s} {label:10s} failed: {str(e).splitlines()[0][:160]}", file=sys.stderr)
            rows.append({"case": name, "impl": label, "error": str(e).splitlines()[0][:160]})
        finally:
            for var in IMPL_ENV.get(label, {}):
                os.environ.pop(var, None)
    return rows


def paged_case(timer, kiln, reps, page=64):
    """kiln's paged forward against its contiguous one (d128, T = 8192, causal, B = 2): the same
    keys in a shuffled page cache. Same output to the bit is asserted."""
    dev, b, t, h, d = "cuda", 2, 8192, 16, 128
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(b * t, h, d, generator=gen).to(dev, torch.bfloat16)
    k = torch.randn(b * t, h, d, generator=gen).to(dev, torch.bfloat16)
    v = torch.randn(b * t, h, d, generator=gen).to(dev, torch.bfloat16)
    pages_per_seq = t // page
    perm = torch.randperm(b * pages_per_seq, generator=gen)
    table = perm.view(b, pages_per_seq).to(dev, torch.int32)
    kc = torch.empty(b * pages_per_seq, page, h, d, device=dev, dtype=torch.bfloat16)
    vc = torch.empty_like(kc)
    kc[table.flatten().long()] = k.view(b * pages_per_seq, page, h, d)
    vc[table.flatten().long()] = v.view(b * pages_per_seq, page, h, d)
    cu = torch.arange(0, (b + 1) * t, t, dtype=torch.int32, device=dev)
    flops = 4.0 * d * b * h * visible_pairs(t, True, None, None)
    rows = []
    with torch.no_grad():
        # The paged forward runs the mma.sync kernel; the same bits need the same kernel.
        contiguous = mma_sync(lambda: kiln.attention_varlen(q, k, v, cu, cu, causal=True))
        paged = kiln.attention_varlen_paged(q, kc, vc, table, cu, cu, causal=True)
        same = torch.equal(contiguous, paged)
        for label, fn in (("kiln", lambda: kiln.attention_varlen(q, k, v, cu, cu, causal=True)),
                          ("kiln_mma_sync", lambda: mma_sync(
                              lambda: kiln.attention_varlen(q, k, v, cu, cu, causal=True))),
                          (f"kiln_paged{page}", lambda: kiln.attention_varlen_paged(
                              q, kc, vc, table, cu, cu, causal=True))):
            ms = timer.measure(lambda _: fn(), reps=reps)
            rows.append({"case": "paged_d128_T8192_causal", "impl": label, "ms": ms,
                         "tflops": flops / ms / 1e9, "same_bits": same})
            print(f"paged_d128_T8192_causal {label:14s} fwd {ms:8.3f} ms "
                  f"{flops / ms / 1e9:6.1f} TFLOP/s same bits {same}", file=sys.stderr)
    return rows


def main():
    args = parse_args()
    kiln = load_kiln()
    timer = Timer(torch.device("cuda"))
    reps = 10 if args.quick else 30
    cases = [  # name, B, T, Hq, Hkv, D, causal, extra
        ("d128_T2048", 8, 2048, 16, 16, 128, False, {}),
        ("d128_T2048_causal", 8, 2048, 16, 16, 128, True, {}),
        ("d128_T8192", 2, 8192, 16, 16, 128, False, {}),
        ("d128_T8192_causal", 2, 8192, 16, 16, 128, True, {}),
        ("d64_T8192_causal", 2, 8192, 32, 32, 64, True, {}),
        ("d256_T8192_causal", 2, 8192, 8, 8, 256, True, {}),
        ("gqa32x8_d128_T8192_causal", 2, 8192, 32, 8, 128, True, {}),
        ("docs8_d128_T8192_causal", 2, 8192, 16, 16, 128, True, {"ndocs": 8}),
        ("window1024_d128_T8192", 2, 8192, 16, 16, 128, True, {"window": 1024}),
    ]
    if args.quick:
        cases = cases[:2]
    rows = []
    for name, b, t, hq, hkv, d, causal, extra in cases:
        rows += run_case(name, b, t, hq, hkv, d, causal, timer, kiln, reps, **extra)
    paged_rows = paged_case(timer, kiln, reps) if kiln is not None and not args.quick else []
    lines = [f"# attention forward peers: {torch.cuda.get_device_name()}", "",
             f"- commit {args.commit}, torch {torch.__version__}, bf16, median of {reps}", "",
             "| case | impl | fwd ms | fwd TFLOP/s | bwd ms | bwd TFLOP/s | max diff vs first "
             "(out, grads) | best peer / kiln fwd, bwd |",
             "|---|---|---|---|---|---|---|---|"]
    for name, *_ in cases:
        mine = [r for r in rows if r["case"] == name and "ms" in r]
        k = next((r for r in mine if r["impl"] == "kiln"), None)
        peers = [r for r in mine if not r["impl"].startswith("kiln")]
        for r in mine:
            ratio = (f"{min(p['ms'] for p in peers) / k['ms']:.2f}, "
                     f"{min(p['bwd_ms'] for p in peers) / k['bwd_ms']:.2f}"
                     if r is k and peers else "")
            lines.append(f"| {name} | {r['impl']} | {r['ms']:.3f} | {r['tflops']:.0f} | "
                         f"{r['bwd_ms']:.3f} | {r['bwd_tflops']:.0f} | "
                         f"{r['max_diff']:.3g}, {r['bwd_max_diff']:.3g} | {ratio} |")
    if paged_rows:
        lines += ["", "| paged case | impl | fwd ms | fwd TFLOP/s | same bits as contiguous |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['case']} | {r['impl']} | {r['ms']:.3f} | {r['tflops']:.0f} | "
                  f"{r['same_bits']} |" for r in paged_rows]
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(args.out, "attention_peers", text, {"rows": rows + paged_rows})


if __name__ == "__main__":
    main()
