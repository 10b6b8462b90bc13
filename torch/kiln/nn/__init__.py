"""kiln's nn.Modules, each a thin holder of parameters over kiln.functional."""

from .moe import MoE
from .norm import LayerNorm, RMSNorm

__all__ = ["LayerNorm", "MoE", "RMSNorm"]
