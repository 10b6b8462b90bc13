"""kiln.moe_align_block_size through PyTorch: against a plain Python grouping (stable by flat
index, padded per expert), an expert map, bad ids counted, opcheck, torch.compile(fullgraph=True);
on a GPU the same against the CPU result."""

from __future__ import annotations

import pytest
import torch

import kiln

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=requires_cuda)]


def python_align(ids, experts, block, expert_map=None, local=None):
    flat = ids.flatten().tolist()
    local = experts if local is None else local
    mapping = list(range(experts)) if expert_map is None else expert_map.tolist()
    groups = [[] for _ in range(local)]
    bad = 0
    for i, e in enumerate(flat):
        if e < 0 or e >= experts:
            bad += 1
        elif mapping[e] >= 0:
            groups[mapping[e]].append(i)
    raw = len(flat) + local * (block - 1)
    cap = (raw + block - 1) // block * block
    sorted_ids, blocks = [], []
    for e, g in enumerate(groups):
        padded = (len(g) + block - 1) // block * block
        sorted_ids += g + [len(flat)] * (padded - len(g))
        blocks += [e] * (padded // block)
    post = len(sorted_ids)
    sorted_ids += [len(flat)] * (cap - post)
    blocks += [-1] * (cap // block - len(blocks))
    return sorted_ids, blocks, post, bad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tokens,k,experts,block", [(1, 8, 256, 16), (37, 2, 8, 64),
                                                    (500, 8, 64, 128)])
@pytest.mark.parametrize("with_map", [False, True])
def test_matches_python(device, tokens, k, experts, block, with_map):
    g = torch.Generator().manual_seed(tokens + experts)
    ids = torch.randint(0, experts, (tokens, k), generator=g, dtype=torch.int32)
    ids.view(-1)[0] = experts  # a bad id
    expert_map, local = None, None
    if with_map:
        held = torch.arange(experts) % 3 == 0
        expert_map = torch.where(held, held.cumsum(0) - 1, torch.tensor(-1)).int()
        local = int(held.sum())
    got = kiln.moe_align_block_size(ids.to(device), experts, block,
                                    None if expert_map is None else expert_map.to(device), local)
    want = python_align(ids, experts, block, expert_map, local)
    assert got[0].cpu().tolist() == want[0]
    assert got[1].cpu().tolist() == want[1]
    assert got[2].item() == want[2]
    assert got[3].item() == want[3]


def test_opcheck():
    ids = torch.randint(0, 16, (9, 4), generator=torch.Generator().manual_seed(1),
                        dtype=torch.int32)
    torch.library.opcheck(torch.ops.kiln.moe_align_block_size, (ids, 16, 16, None, 16))


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    ids = torch.randint(0, 16, (9, 4), generator=torch.Generator().manual_seed(2),
                        dtype=torch.int32)
    fn = torch.compile(lambda x: kiln.moe_align_block_size(x, 16, 32), fullgraph=True,
                       backend="aot_eager")
    for a, b in zip(fn(ids), kiln.moe_align_block_size(ids, 16, 32)):
        assert torch.equal(a, b)


def test_errors():
    with pytest.raises(RuntimeError, match="argument 'block_size': expected a power of two in "
                                           r"\[16, 128\], got 24"):
        kiln.moe_align_block_size(torch.zeros(2, 2, dtype=torch.int32), 4, 24)
