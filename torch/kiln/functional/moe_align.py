"""Token alignment for the grouped expert GEMMs (contract: include/kiln/ops/moe_align.h)."""

from __future__ import annotations

import torch

_ops = torch.ops.kiln


def moe_align_block_size(topk_ids: torch.Tensor, num_experts: int, block_size: int,
                         expert_map: torch.Tensor | None = None,
                         num_local_experts: int | None = None):
    """(sorted_token_ids, expert_ids, num_tokens_post_pad, bad_id_count), all int32.

    topk_ids int32 [T, k]; block_size a power of two in [16, 128]; expert_map int32 [E] maps
    global to local experts (-1: not held here) with num_local_experts of them. Entries are
    grouped by local expert in flat order (deterministic), each group padded to block_size with
    T * k; ids outside [0, E) are dropped and counted.
    """
    local = num_experts if num_local_experts is None else num_local_experts
    return _ops.moe_align_block_size(topk_ids, num_experts, block_size, expert_map, local)
