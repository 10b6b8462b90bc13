"""kiln's functional API: thin wrappers over torch.ops.kiln.* with defaults and docs. Each works
under autograd, torch.compile(fullgraph=True) and CUDA-graph capture (bias_dropout_add with an
explicit seed there)."""

from .activation import gelu_residual, relu2, swiglu
from .attention import attention, attention_varlen, attention_varlen_paged
from .dropout import bias_dropout_add
from .gather import gather_rows, gather_rows_pair
from .kv_cache import kv_cache_write_
from .mhc import mhc_post_mix, mhc_pre_mix, sinkhorn_knopp
from .moe import fused_moe
from .moe_align import moe_align_block_size
from .moe_sum import moe_sum
from .norm import add_layer_norm, add_rms_norm, layer_norm, rms_norm
from .quantize import dequantize_fp8, quantize_fp8
from .rope import rope, rope_
from .router import dense_router, hash_router, router
from .tau_tail import tau_tail_
from .topk import topk

__all__ = [
    "add_layer_norm",
    "add_rms_norm",
    "attention",
    "attention_varlen",
    "attention_varlen_paged",
    "bias_dropout_add",
    "dequantize_fp8",
    "fused_moe",
    "gather_rows",
    "gather_rows_pair",
    "gelu_residual",
    "dense_router",
    "hash_router",
    "kv_cache_write_",
    "layer_norm",
    "mhc_post_mix",
    "mhc_pre_mix",
    "moe_align_block_size",
    "moe_sum",
    "quantize_fp8",
    "relu2",
    "rms_norm",
    "rope",
    "rope_",
    "router",
    "sinkhorn_knopp",
    "swiglu",
    "tau_tail_",
    "topk",
]
