#!/usr/bin/env python3
"""Side-by-side benchmark of RMSNorm / add+RMSNorm / LayerNorm / add+LayerNorm: kiln vs its peers.

One run measures, on the same GPU and in the same process:
  * the ceiling: device-to-device copy bandwidth (torch copy_, bytes read + written);
  * forward, backward and forward+backward of each op for each implementation:
      eager          the plain math composition (HF-Llama style RMSNorm, fp32 statistics)
      torch          torch.nn.functional.rms_norm / layer_norm (add variants: torch add + that)
      compile        torch.compile(plain math, dynamic=False), default mode
      compile_maxat  torch.compile(plain math, dynamic=False, mode="max-autotune-no-cudagraphs");
                     only with --max-autotune on (20-70 s of autotuning per op and shape on an H100)
      liger          Liger-Kernel autograd Functions (add+LayerNorm: torch add + Liger LayerNorm)
      kiln           kiln.rms_norm / add_rms_norm / layer_norm / add_layer_norm

Timing: CUDA events around each call, median of --reps repetitions after warm-up, the L2 flushed
(a >= 256 MB buffer zeroed, outside the events) before every repetition.  Two figures per cell:
  gpu       the GPU was held busy (torch.cuda._sleep) while the host enqueued the call, so the events
            bracket the GPU work of the call (its kernels plus the gaps between them);
  launched  the GPU was idle (synchronized) when the call was issued, so host overhead (Python,
            autograd, dispatcher, launches) shows up: what one call from an idle queue costs.
Backward: each repetition runs a fresh forward (untimed), flushes L2, then times
torch.autograd.grad(outputs, inputs, grad_outputs) -- no .grad accumulation kernels, no retained graph.
fwd+bwd: forward and torch.autograd.grad timed together as launched by Python.
The forward is the training forward (inputs require grad, so statistics are saved for backward).

Bytes counted (each input read once, each output written once; fp32 mean/rstd ignored):
  fwd: x, [residual], weight, [bias], y, [residual_out]
  bwd: x (or residual_out), dy, [d residual_out], weight, dx (= d residual, written once), dweight, [dbias]
GB/s = bytes / 1e9 / time; "% roof" is relative to the copy bandwidth measured in the same run.
"same-size copy": a copy moving the op's bytes, timed like the cells (same flush and mode); kiln %
= that copy's time / kiln's time. The 1 GiB copy amortizes the fixed cost of a call; this one pays it.
ratio = best peer time / kiln time (>= 1.0 means kiln wins), per row, for both gpu and launched.

Usage:
  python3 bench/peers/norm_peers.py                 # full set, bf16, M=16384, N in {2048,4096,8192}
  python3 bench/peers/norm_peers.py --quick         # smoke test: one shape, fewer reps
  python3 bench/peers/norm_peers.py --dtype bf16,fp16,fp32
  python3 bench/peers/norm_peers.py --quick --max-autotune on   # add the max-autotune compile peer
  python3 bench/peers/norm_peers.py --device cpu    # CPU smoke test of the code path, tiny shapes
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
import traceback
import types
from pathlib import Path

from commit import git_commit as peers_git_commit

T0 = time.perf_counter()
REPO = Path(__file__).resolve().parents[2]

OPS = ["rms", "add_rms", "ln", "add_ln"]
OP_TITLE = {"rms": "RMSNorm", "add_rms": "add+RMSNorm", "ln": "LayerNorm", "add_ln": "add+LayerNorm"}
IMPLS = ["eager", "torch", "compile", "compile_maxat", "liger", "kiln"]
PHASES = ["fwd", "bwd", "fwdbwd"]
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def short_err(e: BaseException, n: int = 160) -> str:
    s = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
    return s if len(s) <= n else s[: n - 3] + "..."


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dtype", default="bf16", help="comma list of bf16,fp16,fp32 (or 'all')")
    p.add_argument("--M", type=int, default=None, help="rows (default 16384; 256 on cpu)")
    p.add_argument("--N", default=None, help="comma list of hidden sizes (default 2048,4096,8192; "
                                             "--quick: 4096; cpu: 256,512)")
    p.add_argument("--ops", default=",".join(OPS), help="comma list of " + ",".join(OPS))
    p.add_argument("--impls", default=",".join(IMPLS), help="comma list of " + ",".join(IMPLS))
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per cell "
                                                          "(default 100; --quick 30; cpu 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls before timing (default 5)")
    p.add_argument("--quick", action="store_true", help="one shape, fewer reps (smoke test)")
    p.add_argument("--max-autotune", choices=["on", "off"], default="off",
                   help="include torch.compile mode=max-autotune-no-cudagraphs (default off: on an H100 "
                        "its autotuning costs 20-70 s per op and shape, for a few %% at most)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile impls")
    p.add_argument("--compile-on-cpu", action="store_true",
                   help="with --device cpu, also run torch.compile (slow: C++ codegen)")
    p.add_argument("--no-check", action="store_true", help="skip the correctness check")
    p.add_argument("--modes", default="gpu,launched", help="timing modes: gpu,launched")
    p.add_argument("--rms-eps", type=float, default=1e-6)
    p.add_argument("--ln-eps", type=float, default=1e-5)
    p.add_argument("--copy-gib", type=float, default=1.0, help="size of the copy for the ceiling")
    p.add_argument("--flush-mib", type=int, default=256, help="L2 flush buffer (raised to 4x L2)")
    p.add_argument("--time-budget", type=float, default=270.0,
                   help="soft wall-clock budget in s: past 60%% max-autotune is skipped, past 100%% "
                        "reps are cut to 20")
    p.add_argument("--kiln-path", default=None,
                   help="directory holding the kiln package (default: try `import kiln`, "
                        "then <repo>/torch)")
    p.add_argument("--out", default=str(REPO / "bench" / "results"),
                   help="output directory, or a path ending in .json (a .md is written beside it)")
    p.add_argument("--commit", default=None, help="git commit to record (default: git rev-parse)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    a.dtypes = list(DTYPES) if a.dtype == "all" else [d.strip() for d in a.dtype.split(",") if d.strip()]
    for d in a.dtypes:
        if d not in DTYPES:
            p.error(f"unknown dtype {d!r}")
    a.ops = [o.strip() for o in a.ops.split(",") if o.strip()]
    for o in a.ops:
        if o not in OPS:
            p.error(f"unknown op {o!r}")
    a.impls = [i.strip() for i in a.impls.split(",") if i.strip()]
    for i in a.impls:
        if i not in IMPLS:
            p.error(f"unknown impl {i!r}")
    a.modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    for m in a.modes:
        if m not in ("gpu", "launched"):
            p.error(f"unknown mode {m!r}")
    cpu = a.device == "cpu"
    if a.M is None:
        a.M = 256 if cpu else 16384
    if a.N is None:
        a.Ns = [256, 512] if cpu else ([4096] if a.quick else [2048, 4096, 8192])
    else:
        a.Ns = [int(x) for x in a.N.split(",") if x.strip()]
    if cpu and a.quick:
        a.Ns = a.Ns[:1]
    if a.reps is None:
        a.reps = 5 if cpu else (30 if a.quick else 100)
    if a.warmup is None:
        a.warmup = 1 if cpu else (3 if a.quick else 5)
    if a.no_compile or (cpu and not a.compile_on_cpu):
        a.impls = [i for i in a.impls if not i.startswith("compile")]
    if a.max_autotune == "off":
        a.impls = [i for i in a.impls if i != "compile_maxat"]
    return a


# --------------------------------------------------------------------------------------------
# The plain math (what eager runs and what torch.compile compiles)
# --------------------------------------------------------------------------------------------
def rms_math(x, w, eps):
    # HF Llama RMSNorm: fp32 statistics, normalised x cast back to the input dtype before * w.
    xf = x.float()
    var = xf.pow(2).mean(-1, keepdim=True)
    return w * (xf * torch.rsqrt(var + eps)).to(x.dtype)


def add_rms_math(x, r, w, eps):
    res = x + r
    rf = res.float()
    var = rf.pow(2).mean(-1, keepdim=True)
    return w * (rf * torch.rsqrt(var + eps)).to(x.dtype), res


def ln_math(x, w, b, eps):
    xf = x.float()
    mean = xf.mean(-1, keepdim=True)
    xc = xf - mean
    var = xc.pow(2).mean(-1, keepdim=True)
    return (xc * torch.rsqrt(var + eps) * w.float() + b.float()).to(x.dtype)


def add_ln_math(x, r, w, b, eps):
    res = x + r
    rf = res.float()
    mean = rf.mean(-1, keepdim=True)
    rc = rf - mean
    var = rc.pow(2).mean(-1, keepdim=True)
    return (rc * torch.rsqrt(var + eps) * w.float() + b.float()).to(x.dtype), res


MATH = {"rms": rms_math, "add_rms": add_rms_math, "ln": ln_math, "add_ln": add_ln_math}


def fresh_function(f, tag):
    """A copy of f with its own code object, so that each torch.compile gets its own dynamo cache
    (no recompiles, no cache-size limit, no sharing between compile modes)."""
    name = f"{f.__name__}__{tag}"
    code = f.__code__.replace(co_name=name)
    return types.FunctionType(code, f.__globals__, name, f.__defaults__, f.__closure__)


# --------------------------------------------------------------------------------------------
# Implementations: each returns fn(*inputs) -> output or (y, residual_out), or raises NotAvailable
# --------------------------------------------------------------------------------------------
class NotAvailable(Exception):
    pass


def op_eps(op, args):
    return args.rms_eps if op in ("rms", "add_rms") else args.ln_eps


def make_impl(impl, op, args, ctx):
    eps = op_eps(op, args)
    N = ctx["N"]
    if impl == "eager":
        f = MATH[op]
        return lambda *t: f(*t, eps)

    if impl == "torch":
        F = torch.nn.functional
        if op == "rms":
            if not hasattr(F, "rms_norm"):
                raise NotAvailable("torch.nn.functional.rms_norm missing")
            return lambda x, w: F.rms_norm(x, (N,), w, eps)
        if op == "add_rms":
            def f(x, r, w):
                res = x + r
                return F.rms_norm(res, (N,), w, eps), res
            return f
        if op == "ln":
            return lambda x, w, b: F.layer_norm(x, (N,), w, b, eps)
        if op == "add_ln":
            def f(x, r, w, b):
                res = x + r
                return F.layer_norm(res, (N,), w, b, eps), res
            return f

    if impl in ("compile", "compile_maxat"):
        mode = None if impl == "compile" else "max-autotune-no-cudagraphs"
        tag = f"{impl}_{ctx['dtype']}_{ctx['M']}x{N}"
        cf = torch.compile(fresh_function(MATH[op], tag), dynamic=False, mode=mode)
        return lambda *t: cf(*t, eps)

    if impl == "liger":
        if ctx["liger"] is None:
            raise NotAvailable(ctx["liger_err"])
        if args.device != "cuda":
            raise NotAvailable("Liger needs CUDA")
        L = ctx["liger"]
        if op == "rms":
            # in_place=False: dX goes to its own buffer (same bytes; keeps dY intact between reps)
            return lambda x, w: L["rms"].apply(x, w, eps, 0.0, "llama", False)
        if op == "add_rms":
            if L.get("add_rms") is None:
                raise NotAvailable("liger has no LigerFusedAddRMSNormFunction")
            return lambda x, r, w: L["add_rms"].apply(x, r, w, eps, 0.0, "llama", False)
        if op == "ln":
            return lambda x, w, b: L["ln"].apply(x, w, b, eps)
        if op == "add_ln":
            def f(x, r, w, b):  # Liger has no fused add+LayerNorm: torch add + Liger LayerNorm
                res = x + r
                return L["ln"].apply(res, w, b, eps), res
            return f

    if impl == "kiln":
        K = ctx["kiln"]
        if K is None:
            raise NotAvailable(ctx["kiln_err"])
        name = {"rms": "rms_norm", "add_rms": "add_rms_norm", "ln": "layer_norm",
                "add_ln": "add_layer_norm"}[op]
        kf = getattr(K, name, None)
        if kf is None:
            raise NotAvailable(f"kiln has no {name}")
        if op in ("add_rms", "add_ln"):
            def f(*t):
                out = kf(*t, eps)
                if not (isinstance(out, (tuple, list)) and len(out) == 2):
                    raise TypeError(f"kiln.{name} returned {type(out).__name__}, expected (y, residual_out)")
                return tuple(out)
            return f
        return lambda *t: kf(*t, eps)

    raise NotAvailable(f"unknown impl {impl}")


def import_liger():
    try:
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
        from liger_kernel.ops.layer_norm import LigerLayerNormFunction
    except Exception as e:  # noqa: BLE001
        return None, f"liger_kernel not importable ({short_err(e)})", None
    L = {"rms": LigerRMSNormFunction, "ln": LigerLayerNormFunction, "add_rms": None}
    try:
        from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction
        L["add_rms"] = LigerFusedAddRMSNormFunction
    except Exception:  # noqa: BLE001
        pass
    ver = None
    try:
        from importlib.metadata import version
        ver = version("liger_kernel")
    except Exception:  # noqa: BLE001
        ver = getattr(sys.modules.get("liger_kernel"), "__version__", None)
    try:
        import liger_kernel
        loc = os.path.dirname(liger_kernel.__file__)
    except Exception:  # noqa: BLE001
        loc = None
    return L, None, {"version": ver, "path": loc}


KILN_FUNCS = ("rms_norm", "add_rms_norm", "layer_norm", "add_layer_norm")


def import_kiln(args):
    """import kiln: --kiln-path first, then sys.path (PYTHONPATH / installed), then <repo>/torch.
    A candidate that imports but has none of the norm functions (e.g. a namespace package of an
    unbuilt tree) is skipped."""
    errs = []
    cands = ([args.kiln_path] if args.kiln_path else []) + [None]
    if (REPO / "torch" / "kiln").is_dir():
        cands.append(str(REPO / "torch"))
    for c in cands:
        where = c or "sys.path"
        for k in [k for k in sys.modules if k == "kiln" or k.startswith("kiln.")]:
            del sys.modules[k]
        if c is not None:
            sys.path.insert(0, c)
        try:
            import importlib
            k = importlib.import_module("kiln")
            have = [f for f in KILN_FUNCS if hasattr(k, f)]
            if have:
                info = {"path": getattr(k, "__file__", None) or list(getattr(k, "__path__", [])),
                        "version": getattr(k, "__version__", None), "has": have}
                return k, None, info
            errs.append(f"{where}: kiln at {getattr(k, '__file__', None) or list(getattr(k, '__path__', []))} "
                        f"has none of {'/'.join(KILN_FUNCS)}")
        except Exception as e:  # noqa: BLE001
            errs.append(f"{where}: {short_err(e, 200)}")
        if c is not None:
            sys.path.remove(c)
    return None, "import kiln failed (" + "; ".join(errs) + ")", None


# --------------------------------------------------------------------------------------------
# Bytes
# --------------------------------------------------------------------------------------------
def bytes_moved(op, phase, M, N, esize):
    MN, add = M * N, op.startswith("add_")
    ln = op.endswith("ln")
    fwd = (2 * MN + (2 * MN if add else 0) + N + (N if ln else 0)) * esize
    # bwd: x|res_out, dy, [dres_out], w read; dx, dw, [db] written
    bwd = (3 * MN + (MN if add else 0) + 2 * N + (N if ln else 0)) * esize
    return {"fwd": fwd, "bwd": bwd, "fwdbwd": fwd + bwd}[phase]


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------
class Timer:
    def __init__(self, args, device):
        self.args = args
        self.cuda = device.type == "cuda"
        self.device = device
        self.flush_buf = None
        if self.cuda:
            l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20)
            nbytes = max(args.flush_mib << 20, 4 * l2)
            self.flush_buf = torch.empty(nbytes, dtype=torch.uint8, device=device)
            self.has_sleep = hasattr(torch.cuda, "_sleep")

    def flush(self):
        if self.flush_buf is not None:
            self.flush_buf.zero_()

    def measure(self, run, setup=None, reps=100, warmup=5, mode="gpu", flush=True):
        """Median/min time in ms of run(state) where state = setup() (untimed)."""
        host = []
        for _ in range(max(1, warmup)):
            st = setup() if setup else None
            if self.cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = run(st)
            host.append(time.perf_counter() - t)
            del out, st
        if self.cuda:
            torch.cuda.synchronize()
        host_s = min(host)
        times = []
        if not self.cuda:
            for _ in range(reps):
                st = setup() if setup else None
                t = time.perf_counter()
                out = run(st)
                times.append((time.perf_counter() - t) * 1e3)
                del out, st
        else:
            sleep_cycles = int(min(5e-3, max(20e-6, 2.0 * host_s + 10e-6)) * 2.0e9)
            evs = []
            for i in range(reps):
                st = setup() if setup else None
                if flush:
                    self.flush()
                if mode == "launched":
                    torch.cuda.synchronize()
                elif self.has_sleep:
                    torch.cuda._sleep(sleep_cycles)
                s = torch.cuda.Event(enable_timing=True)
                e = torch.cuda.Event(enable_timing=True)
                s.record()
                out = run(st)
                e.record()
                del out, st
                evs.append((s, e))
                if mode == "gpu" and (i + 1) % 25 == 0:
                    torch.cuda.synchronize()  # bound the queue
            torch.cuda.synchronize()
            times = [s.elapsed_time(e) for s, e in evs]
        return {"median_ms": statistics.median(times), "min_ms": min(times), "reps": len(times),
                "host_ms": host_s * 1e3}


def measure_copy(timer, args, device):
    res = {}
    if timer.cuda:
        sizes = [("copy_%gGiB" % args.copy_gib, int(args.copy_gib * (1 << 30))), ("copy_256MiB", 256 << 20)]
    else:
        sizes = [("copy_64MiB", 64 << 20)]
    for name, n in sizes:
        src = torch.zeros(n, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        r = timer.measure(lambda _: dst.copy_(src), reps=max(10, min(30, args.reps)), warmup=3,
                          mode="gpu", flush=n < (512 << 20))
        gbps = 2 * n / 1e9 / (r["median_ms"] / 1e3)
        res[name] = {"bytes": 2 * n, "median_ms": r["median_ms"], "min_ms": r["min_ms"], "GBps": gbps}
        log(f"ceiling {name}: {r['median_ms']:.3f} ms  {gbps:.0f} GB/s (read+write)")
        del src, dst
    return res


# --------------------------------------------------------------------------------------------
# Inputs, reference, check
# --------------------------------------------------------------------------------------------
class SameSizeCopy:
    """The copy ceiling at one op's byte count: a device-to-device copy moving the same bytes (read +
    written), timed as the cells are (same flush, same mode). A copy of 1 GiB hides the fixed cost
    every call pays (the launch ramp, the tail, the flush's dirty lines written back); at ~130 MB it
    is ~10% of a memory-bound op's time, and no kernel moving those bytes can beat this copy."""

    def __init__(self, timer, device):
        self.timer, self.device, self.ms = timer, device, {}

    def __call__(self, nbytes, mode):
        key = (nbytes, mode)
        if key not in self.ms:
            n = max(1, nbytes // 2)
            src = torch.ones(n, dtype=torch.uint8, device=self.device)
            dst = torch.empty_like(src)
            r = self.timer.measure(lambda _: dst.copy_(src), reps=30, warmup=3, mode=mode, flush=True)
            self.ms[key] = r["median_ms"]
            del src, dst
        return self.ms[key]


def make_inputs(op, M, N, dtype, device, gen):
    def rn(*shape, scale=1.0, shift=0.0):
        t = torch.randn(*shape, generator=gen, device=device, dtype=torch.float32) * scale + shift
        return t.to(dtype)

    x = rn(M, N)
    r = rn(M, N) if op.startswith("add_") else None
    w = rn(N, scale=0.1, shift=1.0)
    b = rn(N, scale=0.1) if op.endswith("ln") else None
    dy = rn(M, N)
    dres = rn(M, N) if op.startswith("add_") else None
    leaves = [t for t in (x, r, w, b) if t is not None]
    for t in leaves:
        t.requires_grad_(True)
    gouts = [t for t in (dy, dres) if t is not None]
    return leaves, gouts


def as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def fwd_bwd(fn, leaves, gouts):
    outs = as_tuple(fn(*leaves))
    grads = torch.autograd.grad(outs, leaves, gouts)
    return outs, grads


def field_names(op):
    outs = ["y"] + (["residual_out"] if op.startswith("add_") else [])
    grads = ["dx"] + (["dresidual"] if op.startswith("add_") else []) + ["dw"] + (["db"] if op.endswith("ln") else [])
    return outs + grads


def reference(op, leaves, gouts, eps):
    """fp32 plain math on upcast inputs (for fp32 inputs: the same as eager)."""
    lf = [t.detach().float().requires_grad_(True) for t in leaves]
    gf = [g.float() for g in gouts]
    outs, grads = fwd_bwd(lambda *t: MATH[op](*t, eps), lf, gf)
    return [t.detach() for t in outs + tuple(grads)]


def rel_errs(op, got, ref):
    errs = {}
    for name, a, b in zip(field_names(op), got, ref):
        if a is None:
            errs[name] = None
            continue
        a = a.detach().float()
        if a.shape != b.shape:
            errs[name] = float("inf")
            continue
        d = (a - b).abs().max().item()
        m = b.abs().max().item()
        errs[name] = d / m if m > 0 else d
    return errs


FLOOR_TOL = {"bf16": 3.2e-2, "fp16": 4e-3, "fp32": 1e-4}  # ~8 ulp of the max (normalised)


def verdict(errs, eager_errs, dname):
    bad = []
    for k, v in errs.items():
        tol = FLOOR_TOL[dname]
        if eager_errs and eager_errs.get(k) is not None:
            tol = max(tol, 4 * eager_errs[k])
        if v is None or not (v <= tol):
            bad.append(f"{k}={v if v is None else f'{v:.2e}'}>{tol:.1e}")
    return ("ok" if not bad else "MISMATCH " + ",".join(bad))


# --------------------------------------------------------------------------------------------
# Main loop
# --------------------------------------------------------------------------------------------
def run_cell(timer, args, fn, leaves, gouts, phase, mode, reps):
    if phase == "fwd":
        return timer.measure(lambda _: fn(*leaves), reps=reps, warmup=args.warmup, mode=mode)
    if phase == "bwd":
        return timer.measure(lambda outs: torch.autograd.grad(outs, leaves, gouts),
                             setup=lambda: as_tuple(fn(*leaves)), reps=reps, warmup=args.warmup, mode=mode)
    if phase == "fwdbwd":
        return timer.measure(lambda _: fwd_bwd(fn, leaves, gouts), reps=reps, warmup=args.warmup, mode=mode)
    raise ValueError(phase)


def bench(args):
    device = torch.device(args.device)
    timer = Timer(args, device)
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed)

    ctx = {}
    ctx["liger"], ctx["liger_err"], liger_info = (None, "not requested", None)
    if "liger" in args.impls:
        ctx["liger"], ctx["liger_err"], liger_info = import_liger()
        log(f"liger: {liger_info if ctx['liger'] else ctx['liger_err']}")
    ctx["kiln"], ctx["kiln_err"], kiln_info = (None, "not requested", None)
    if "kiln" in args.impls:
        ctx["kiln"], ctx["kiln_err"], kiln_info = import_kiln(args)
        log(f"kiln: {kiln_info if ctx['kiln'] else ctx['kiln_err']}")

    if any(i.startswith("compile") for i in args.impls):
        try:
            import importlib
            dyn = importlib.import_module("torch._dynamo")
            dyn.config.cache_size_limit = max(64, dyn.config.cache_size_limit)
        except Exception:  # noqa: BLE001
            pass

    ceiling = measure_copy(timer, args, device)
    roof = list(ceiling.values())[0]["GBps"]
    same_size_copy = SameSizeCopy(timer, device) if device.type == "cuda" else None

    results = []
    n_cells = len(args.dtypes) * len(args.ops) * len(args.Ns)
    cell_i = 0
    for dname in args.dtypes:
        dtype = getattr(torch, DTYPES[dname])
        esize = torch.empty((), dtype=dtype).element_size()
        for op in args.ops:
            eps = op_eps(op, args)
            for N in args.Ns:
                cell_i += 1
                M = args.M
                log(f"== [{cell_i}/{n_cells}] {dname} {OP_TITLE[op]} M={M} N={N}")
                try:
                    leaves, gouts = make_inputs(op, M, N, dtype, device, gen)
                    ref = None if args.no_check else reference(op, leaves, gouts, eps)
                except Exception as e:  # noqa: BLE001
                    log(f"   inputs/reference failed: {short_err(e)}")
                    for impl in args.impls:
                        for phase in PHASES:
                            results.append(dict(dtype=dname, op=op, M=M, N=N, impl=impl, phase=phase,
                                                status="error", reason="inputs: " + short_err(e)))
                    continue
                ctxc = dict(ctx, N=N, M=M, dtype=dname)
                eager_errs = None
                for impl in args.impls:
                    elapsed = time.perf_counter() - T0
                    base = dict(dtype=dname, op=op, M=M, N=N, impl=impl)
                    if impl == "compile_maxat" and elapsed > 0.6 * args.time_budget:
                        reason = f"skipped: past 60% of --time-budget ({elapsed:.0f}s)"
                        log(f"   {impl:14s} {reason}")
                        results += [dict(base, phase=ph, status="n/a", reason=reason) for ph in PHASES]
                        continue
                    reps = args.reps if elapsed < args.time_budget else min(args.reps, 20)
                    # build + first call (compiles, autotunes) + correctness
                    t_first = time.perf_counter()
                    try:
                        fn = make_impl(impl, op, args, ctxc)
                        outs, grads = fwd_bwd(fn, leaves, gouts)
                        got = list(outs) + list(grads)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        first_s = time.perf_counter() - t_first
                    except NotAvailable as e:
                        reason = str(e)
                        log(f"   {impl:14s} n/a: {reason[:140]}")
                        results += [dict(base, phase=ph, status="n/a", reason=reason) for ph in PHASES]
                        continue
                    except Exception as e:  # noqa: BLE001
                        reason = ("compile failed: " if impl.startswith("compile") else "failed: ") + short_err(e)
                        log(f"   {impl:14s} n/a: {reason[:140]}")
                        if os.environ.get("NORM_PEERS_TRACEBACK"):
                            traceback.print_exc()
                        results += [dict(base, phase=ph, status="n/a", reason=reason) for ph in PHASES]
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                        continue
                    check = None
                    if ref is not None:
                        errs = rel_errs(op, got, ref)
                        if impl == "eager":
                            eager_errs = errs
                        check = {"rel_err": errs, "verdict": verdict(errs, eager_errs, dname)}
                    del outs, grads, got
                    line = []
                    for phase in PHASES:
                        rec = dict(base, phase=phase, status="ok",
                                   bytes=bytes_moved(op, phase, M, N, esize), first_call_s=first_s,
                                   check=check)
                        try:
                            for mode in args.modes:
                                rec[mode] = run_cell(timer, args, fn, leaves, gouts, phase, mode, reps)
                            t_ms = rec[args.modes[0]]["median_ms"]
                            rec["GBps"] = rec["bytes"] / 1e9 / (t_ms / 1e3)
                            rec["pct_roof"] = 100.0 * rec["GBps"] / roof
                            if same_size_copy is not None:
                                rec["same_size_copy_ms"] = same_size_copy(rec["bytes"], args.modes[0])
                                rec["pct_same_size_copy"] = 100.0 * rec["same_size_copy_ms"] / t_ms
                            line.append(f"{phase} " + "/".join(f"{rec[m]['median_ms']:.4f}" for m in args.modes)
                                        + f" ({rec['pct_roof']:.0f}%)")
                        except Exception as e:  # noqa: BLE001
                            rec.update(status="n/a", reason="failed while timing: " + short_err(e))
                            line.append(f"{phase} n/a")
                            if device.type == "cuda":
                                torch.cuda.empty_cache()
                        results.append(rec)
                    chk = "" if check is None else f"  check {check['verdict']}"
                    log(f"   {impl:14s} first call {first_s:6.2f}s | ms {'/'.join(args.modes)}: "
                        + " | ".join(line) + chk)
                    del fn
                del leaves, gouts, ref
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return ceiling, roof, results, {"liger": liger_info, "kiln": kiln_info,
                                    "liger_err": None if ctx["liger"] else ctx["liger_err"],
                                    "kiln_err": None if ctx["kiln"] else ctx["kiln_err"]}


def summarize(results, args, roof):
    rows = []
    key = lambda r: (r["dtype"], r["op"], r["N"], r["phase"])  # noqa: E731
    groups = {}
    for r in results:
        groups.setdefault(key(r), []).append(r)
    for (dname, op, N, phase), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        kiln = next((r for r in rs if r["impl"] == "kiln"), None)
        peers = [r for r in ok if r["impl"] != "kiln"]
        row = dict(dtype=dname, op=op, N=N, M=args.M, phase=phase)
        for m in args.modes:
            if peers:
                best = min(peers, key=lambda r: r[m]["median_ms"])
                row[f"best_peer_{m}"] = best["impl"]
                row[f"best_peer_{m}_ms"] = best[m]["median_ms"]
            if kiln is not None and kiln["status"] == "ok":
                row[f"kiln_{m}_ms"] = kiln[m]["median_ms"]
                if peers:
                    row[f"ratio_{m}"] = row[f"best_peer_{m}_ms"] / kiln[m]["median_ms"]
        m0 = args.modes[0]
        if peers:
            row["best_peer_pct_roof"] = min(peers, key=lambda r: r[m0]["median_ms"])["pct_roof"]
        if kiln is not None:
            if kiln["status"] == "ok":
                row["kiln_pct_roof"] = kiln["pct_roof"]
                if "pct_same_size_copy" in kiln:
                    row["kiln_pct_same_size_copy"] = kiln["pct_same_size_copy"]
                    row["same_size_copy_ms"] = kiln["same_size_copy_ms"]
                row["kiln_check"] = (kiln.get("check") or {}).get("verdict")
            else:
                row["kiln_status"] = "n/a: " + kiln.get("reason", "")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------
def fmt_ms(r, mode):
    if r is None:
        return "–"
    if r["status"] != "ok":
        return "n/a"
    return f"{r[mode]['median_ms']:.4f}"


def full_tables(results, args, roof):
    lines = []
    impls = args.impls
    for dname in args.dtypes:
        for op in args.ops:
            rs = [r for r in results if r["dtype"] == dname and r["op"] == op]
            if not rs:
                continue
            for mode in args.modes:
                lines.append(f"\n#### {dname} {OP_TITLE[op]}, M={args.M}: median ms, {mode} "
                             f"(% of copy roof {roof:.0f} GB/s)\n")
                lines.append("| N | phase | " + " | ".join(impls) + " |")
                lines.append("|---|---|" + "---|" * len(impls))
                for N in args.Ns:
                    for phase in PHASES:
                        cells = []
                        for impl in impls:
                            r = next((x for x in rs if x["N"] == N and x["phase"] == phase and x["impl"] == impl), None)
                            if r is None or r["status"] != "ok":
                                cells.append("n/a" if r is not None else "–")
                            else:
                                ms = r[mode]["median_ms"]
                                pct = 100.0 * r["bytes"] / 1e9 / (ms / 1e3) / roof
                                cells.append(f"{ms:.4f} ({pct:.0f}%)")
                        lines.append(f"| {N} | {phase} | " + " | ".join(cells) + " |")
    # unavailable impls / reasons
    reasons = {}
    for r in results:
        if r["status"] != "ok":
            reasons.setdefault((r["impl"], r.get("reason", "")), set()).add(f"{r['dtype']}/{r['op']}/{r['N']}")
    if reasons:
        lines.append("\n#### Not measured\n")
        for (impl, reason), where in sorted(reasons.items()):
            w = sorted(where)
            lines.append(f"- {impl}: {reason} [{', '.join(w[:6])}{' ...' if len(w) > 6 else ''}]")
    # correctness
    chk = [r for r in results if r["status"] == "ok" and r["phase"] == "fwd" and r.get("check")]
    if chk:
        lines.append("\n#### Correctness vs fp32 reference (max |err| / max |ref| per field; first call)\n")
        lines.append("| dtype | op | N | impl | verdict | errors |")
        lines.append("|---|---|---|---|---|---|")
        for r in chk:
            errs = ", ".join(f"{k} {v:.1e}" if v is not None else f"{k} –" for k, v in r["check"]["rel_err"].items())
            lines.append(f"| {r['dtype']} | {r['op']} | {r['N']} | {r['impl']} | {r['check']['verdict']} | {errs} |")
    first = [r for r in results if r["status"] == "ok" and r["phase"] == "fwd" and r["impl"].startswith("compile")]
    if first:
        lines.append("\n#### torch.compile first fwd+bwd call (compile + autotune), s\n")
        lines.append("| dtype | op | N | impl | s |")
        lines.append("|---|---|---|---|---|")
        for r in first:
            lines.append(f"| {r['dtype']} | {r['op']} | {r['N']} | {r['impl']} | {r['first_call_s']:.1f} |")
    return "\n".join(lines)


def summary_table(rows, args):
    modes = args.modes
    hdr = "| dtype | op | N | phase | best peer | peer ms | kiln ms | kiln %roof | same-size copy ms (kiln %) | " + \
          " | ".join(f"peer/kiln {m}" for m in modes) + " |"
    lines = [hdr, "|" + "---|" * (9 + len(modes))]
    m0 = modes[0]
    for r in rows:
        peer = r.get(f"best_peer_{m0}", "–")
        pms = f"{r[f'best_peer_{m0}_ms']:.4f} ({r.get('best_peer_pct_roof', 0):.0f}%)" if f"best_peer_{m0}_ms" in r else "–"
        if f"kiln_{m0}_ms" in r:
            kms = f"{r[f'kiln_{m0}_ms']:.4f}"
            kp = f"{r['kiln_pct_roof']:.0f}%"
            if r.get("kiln_check") and r["kiln_check"] != "ok":
                kp += " ⚠mismatch"
        else:
            kms = "n/a"
            kp = "–"
        same = (f"{r['same_size_copy_ms']:.4f} ({r['kiln_pct_same_size_copy']:.0f}%)"
                if "same_size_copy_ms" in r else "–")
        ratios = []
        for m in modes:
            v = r.get(f"ratio_{m}")
            ratios.append(f"{v:.2f}" if v is not None else "n/a")
        lines.append(f"| {r['dtype']} | {OP_TITLE[r['op']]} | {r['N']} | {r['phase']} | {peer} | {pms} | {kms} | {kp} | {same} | "
                     + " | ".join(ratios) + " |")
    return "\n".join(lines)


def git_commit(args):
    return args.commit or peers_git_commit()


def meta_info(args):
    m = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(shlex.quote(a) for a in ["python3"] + sys.argv),
        "commit": git_commit(args),
        "python": platform.python_version(),
        "host": platform.node(),
        "torch": getattr(torch, "__version__", None) if torch else None,
        "device": args.device,
        "M": args.M, "Ns": args.Ns, "dtypes": args.dtypes, "ops": args.ops, "impls": args.impls,
        "reps": args.reps, "warmup": args.warmup, "modes": args.modes,
        "rms_eps": args.rms_eps, "ln_eps": args.ln_eps, "quick": args.quick,
    }
    try:
        import triton
        m["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        m["triton"] = None
    if torch is not None and args.device == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        m["gpu"] = torch.cuda.get_device_name(0)
        m["sm_count"] = p.multi_processor_count
        m["l2_bytes"] = getattr(p, "L2_cache_size", None)
        m["cuda_runtime"] = torch.version.cuda
        m["capability"] = "%d.%d" % torch.cuda.get_device_capability(0)
    return m


def out_paths(args, meta):
    o = Path(args.out)
    if o.suffix in (".json", ".md"):
        o.parent.mkdir(parents=True, exist_ok=True)
        return o.with_suffix(".json"), o.with_suffix(".md")
    o.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    dev = (meta.get("gpu") or args.device).replace(" ", "_").replace("/", "_")
    stem = f"norm_peers_{stamp}_{dev}{'_quick' if args.quick else ''}"
    return o / (stem + ".json"), o / (stem + ".md")


torch = None


def main(argv=None):
    global torch
    args = parse_args(argv)
    try:
        import torch as _torch
        torch = _torch
    except Exception as e:  # noqa: BLE001
        print(f"norm_peers: torch is not importable ({short_err(e)}); nothing measured.", flush=True)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("norm_peers: CUDA is not available on this machine; nothing measured. "
              "(Use --device cpu for a smoke test of the code path.)", flush=True)
        return 0
    torch.manual_seed(args.seed)
    meta = meta_info(args)
    log(f"norm_peers: {meta.get('gpu', args.device)} torch {meta['torch']} triton {meta['triton']} "
        f"commit {meta['commit']}")
    log(f"shapes M={args.M} N={args.Ns} dtypes={args.dtypes} impls={args.impls} reps={args.reps} "
        f"modes={args.modes}")

    ceiling, roof, results, libinfo = bench(args)
    meta.update(libinfo)
    meta["wall_s"] = time.perf_counter() - T0
    rows = summarize(results, args, roof)

    notes = [
        "gpu = events bracket the call's GPU work (queue pre-filled); launched = call issued to an idle GPU "
        "(host overhead included). L2 flushed before every repetition.",
        "bwd = torch.autograd.grad on a fresh (untimed) forward's graph; fwdbwd = forward + autograd.grad.",
        "eager = plain math (fp32 statistics); torch = F.rms_norm / F.layer_norm (+ torch add for add_*); "
        "liger add_ln = torch add + Liger LayerNorm; liger rms in_place=False.",
        "ratio = best peer median / kiln median (>= 1 means kiln wins).",
    ]
    md = [f"# Norm peers: {meta.get('gpu', args.device)}", "",
          f"- date (UTC): {meta['date_utc']}",
          f"- commit: {meta['commit']}",
          f"- torch {meta['torch']} (CUDA {meta.get('cuda_runtime')}), triton {meta['triton']}, "
          f"python {meta['python']}",
          f"- liger: {libinfo['liger'] or libinfo['liger_err']}",
          f"- kiln: {libinfo['kiln'] or libinfo['kiln_err']}",
          f"- command: `{meta['command']}`",
          f"- M={args.M}, N={args.Ns}, reps={args.reps} (median), warmup={args.warmup}, wall {meta['wall_s']:.0f} s",
          "- ceiling: " + ", ".join(f"{k} {v['GBps']:.0f} GB/s ({v['median_ms']:.3f} ms)" for k, v in ceiling.items()),
          ""] + [f"- {n}" for n in notes]
    full = full_tables(results, args, roof)
    summ = summary_table(rows, args)
    md_text = "\n".join(md) + "\n\n## Full results\n" + full + "\n\n## Summary\n\n" + summ + "\n"

    jpath, mpath = out_paths(args, meta)
    with open(jpath, "w") as f:
        json.dump({"meta": meta, "ceiling": ceiling, "roof_GBps": roof, "notes": notes,
                   "results": results, "summary": rows}, f, indent=1, default=str)
    with open(mpath, "w") as f:
        f.write(md_text)

    print("\n" + "\n".join(md) + "\n" + full + "\n", flush=True)
    log(f"wrote {jpath} and {mpath}")
    print(f"\n## Summary ({meta.get('gpu', args.device)}, {args.M} rows, copy roof {roof:.0f} GB/s; "
          f"ms = median {args.modes[0]}; peer/kiln >= 1 means kiln wins)\n", flush=True)
    print(summ, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
