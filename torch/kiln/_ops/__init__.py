"""Fake (meta) impls and autograd formulas of the ops in torch.ops.kiln, one module per family
(the C++ schemas name their module with set_python_module)."""

from . import (  # noqa: F401
    activation,
    attention,
    dropout,
    gather,
    kv_cache,
    mhc,
    moe,
    moe_align,
    moe_sum,
    norm,
    quantize,
    rope,
    router,
    tau_tail,
    topk,
)
