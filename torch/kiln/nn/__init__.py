"""kiln's nn.Modules, each a thin holder of parameters over kiln.functional."""

from .norm import LayerNorm, RMSNorm

__all__ = ["LayerNorm", "RMSNorm"]
