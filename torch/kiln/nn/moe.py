"""A mixture-of-experts layer over kiln's router and fused expert path."""

from __future__ import annotations

import math

import torch

from .. import functional as F


class MoE(torch.nn.Module):
    """Router + routed experts: out = sum over each token's k picks of w * expert_e(x).

    Args:
        hidden: H, the size of x's last dim.
        intermediate: I, each expert's inner width.
        num_experts: E.
        top_k: k, experts a token is sent to.
        activation: "swiglu" (default), "gelu_tanh", "gelu_erf" (GELU(gate) * (up + 1)) or
            "relu2" (ungated).
        router: "softmax" (with ``renormalize``), "deepseek_v3" (sigmoid scores, ``n_group`` /
            ``topk_group`` group-limited choice, ``routed_scaling_factor``) or "activation"
            (MegaMoE: sqrt(softplus)). The last two select with ``expert_bias`` added (a buffer,
            zeros, for load-balancing schemes to update outside autograd; it has no gradient).
        dtype, device: of the expert weights (bfloat16 by default; the backward takes bfloat16
            only). The gate weight [E, H] is float32, and the logits are computed in float32.

    Parameters: gate [E, H] (float32), w13 [E, 2I, H] (gate rows, then up rows; [E, I, H] for
    relu2), w2 [E, H, I].

    forward(x [..., H]) -> [..., H] of x's dtype (x in the experts' dtype). Two kiln ops:
    kiln.dense_router (fp32 logits of x and the gate, and the routing: one fused kernel up to 16
    tokens) and kiln.fused_moe; their receipts say which kernels ran. Backward: the router's
    weights to the logits and on to x and the gate, and the expert path to x, w13, w2 and the
    weights, both by recomputation in torch ops (kiln/_ops/router.py, kiln/_ops/moe.py).
    """

    def __init__(
        self,
        hidden: int,
        intermediate: int,
        num_experts: int,
        top_k: int,
        *,
        activation: str = "swiglu",
        router: str = "softmax",
        renormalize: bool = True,
        n_group: int = 1,
        topk_group: int = 1,
        routed_scaling_factor: float = 1.0,
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if activation not in ("swiglu", "gelu_tanh", "gelu_erf", "relu2"):
            raise ValueError("MoE: activation must be swiglu, gelu_tanh, gelu_erf or relu2, "
                             f"got {activation!r}")
        if router not in ("softmax", "deepseek_v3", "activation"):
            raise ValueError("MoE: router must be softmax, deepseek_v3 or activation, "
                             f"got {router!r}")
        self.hidden, self.intermediate = hidden, intermediate
        self.num_experts, self.top_k = num_experts, top_k
        self.activation, self.router = activation, router
        self.renormalize = renormalize
        self.n_group, self.topk_group = n_group, topk_group
        self.routed_scaling_factor = routed_scaling_factor
        rows13 = intermediate if activation == "relu2" else 2 * intermediate
        self.gate = torch.nn.Parameter(
            torch.empty(num_experts, hidden, dtype=torch.float32, device=device))
        self.w13 = torch.nn.Parameter(
            torch.empty(num_experts, rows13, hidden, dtype=dtype, device=device))
        self.w2 = torch.nn.Parameter(
            torch.empty(num_experts, hidden, intermediate, dtype=dtype, device=device))
        if router == "softmax":
            self.register_buffer("expert_bias", None)
        else:
            self.register_buffer(
                "expert_bias", torch.zeros(num_experts, dtype=torch.float32, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default: uniform in +-1/sqrt(fan_in) for each projection.
        for weight, fan_in in ((self.gate, self.hidden), (self.w13, self.hidden),
                               (self.w2, self.intermediate)):
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            torch.nn.init.uniform_(weight, -bound, bound)

    def route(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights float32 [T, k], ids int32 [T, k]) for tokens x2 [T, H]."""
        weights, ids, _logits = F.dense_router(
            x2.float(), self.gate, self.top_k, kind=self.router, renormalize=self.renormalize,
            bias=self.expert_bias, n_group=self.n_group, topk_group=self.topk_group,
            routed_scaling_factor=self.routed_scaling_factor)
        return weights, ids

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.hidden)
        weights, ids = self.route(x2)
        out = F.fused_moe(x2, self.w13, self.w2, weights, ids, activation=self.activation)
        return out.reshape(x.shape)

    def extra_repr(self) -> str:
        return (f"{self.hidden}, {self.intermediate}, experts={self.num_experts}, "
                f"top_k={self.top_k}, activation={self.activation}, router={self.router}")
