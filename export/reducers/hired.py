"""HiRED as a static graph: pure tensor functions, no sort/argsort/scatter, no data-dependent shape.

Shapes: B batch, P partitions (full view first, then grid cells row-major), N patch tokens per
partition laid out on an n x n grid, C = P - 1 cells, H heads, T = tokens incl. CLS, d head dim.
Integer bookkeeping is int64 so it stays exact on every backend (also under fp16 compute).
"""

from __future__ import annotations

import numpy as np
import torch


def cls_attention_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[B, H, T, d] x2 -> [B, T-1]: CLS row of softmax(q k^T / sqrt(d)), summed over heads, CLS key dropped."""
    logits = q[:, :, :1] @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    return logits.softmax(-1).sum(1)[:, 0, 1:]


def received_attention_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[B, H, N, d] x2 -> [B, N]: attention each token receives, mean over queries, summed over heads.

    The substitute score for encoders without a CLS token (SigLIP). One head at a time, so the
    peak is one [B, N, N] map rather than [B, H, N, N].
    """
    total = torch.zeros(q.shape[0], q.shape[2], dtype=q.dtype)
    for h in range(q.shape[1]):
        attn = (q[:, h] @ k[:, h].transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)
        total = total + attn.mean(1)
    return total


def stable_descending_rank(scores: torch.Tensor) -> torch.Tensor:
    """[..., N] -> [..., N] int64: position of each entry in a stable descending sort (ties: lower index first)."""
    n = scores.shape[-1]
    a = scores.unsqueeze(-1)  # [..., i, 1]
    b = scores.unsqueeze(-2)  # [..., 1, j]
    earlier = torch.ones(n, n, dtype=torch.bool).tril(-1)  # [i, j]: j < i
    beats = torch.logical_or(b > a, torch.logical_and(b == a, earlier))
    return beats.to(torch.int64).sum(-1)


def cell_regions(side: int, grid: tuple[int, int]) -> torch.Tensor:
    """[N, C] 0/1 int64: which grid cell's 2-D region of the full view each of its N = side^2 patches lies in."""
    gh, gw = grid
    rows = np.minimum(np.arange(side) * gh // side, gh - 1)
    cols = np.minimum(np.arange(side) * gw // side, gw - 1)
    cell = (rows[:, None] * gw + cols[None, :]).reshape(-1)
    return torch.from_numpy((cell[:, None] == np.arange(gh * gw)[None, :]).astype(np.int64))


def cell_budgets(counts: torch.Tensor, sub_total: int, cap: int) -> torch.Tensor:
    """[B, C] int64 marked counts -> [B, C] int64 budgets summing to ``sub_total``, each <= ``cap``.

    Proportional shares, cells that reach ``cap`` are capped and the rest re-shared (C rounds,
    unrolled), then floor + largest remainder (ties to the lower index). Equal weights if every
    free cell has count 0. Same rule as ``edgetrim.export.reducers.budget.sub_budgets_reference``.
    """
    c = counts.shape[-1]
    capped = torch.zeros_like(counts, dtype=torch.bool)

    def shares(capped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        free = torch.logical_not(capped).to(torch.int64)
        left = sub_total - cap * capped.to(torch.int64).sum(-1, keepdim=True)
        w = counts * free
        w = torch.where(w.sum(-1, keepdim=True) == 0, free, w)
        total = w.sum(-1, keepdim=True).clamp(min=1)
        return w * left, total, left

    for _ in range(c):
        num, total, _ = shares(capped)
        capped = torch.logical_or(capped, num >= cap * total)
    num, total, left = shares(capped)
    base = torch.div(num, total, rounding_mode="floor")
    rem = num - base * total
    free = torch.logical_not(capped)
    leftover = left - (base * free.to(torch.int64)).sum(-1, keepdim=True)
    r_i, r_j = rem.unsqueeze(-1), rem.unsqueeze(-2)
    earlier = torch.ones(c, c, dtype=torch.bool).tril(-1)
    ahead = torch.logical_and(free.unsqueeze(-2), torch.logical_or(r_j > r_i, torch.logical_and(r_j == r_i, earlier)))
    rank = ahead.to(torch.int64).sum(-1)
    bonus = torch.logical_and(free, rank < leftover).to(torch.int64)
    return torch.where(capped, torch.full_like(base, cap), base * free.to(torch.int64) + bonus)


def partition_budgets(early_full: torch.Tensor, regions: torch.Tensor, budget) -> torch.Tensor:
    """[B, N] early-layer scores of the full view -> [B, P] int64 budgets summing to K.

    ``budget`` is an ``edgetrim.export.reducers.budget.HiredBudget``. The full view's top M tokens are
    marked and counted per cell region; the cells share the rest of K by those counts.
    """
    b = early_full.shape[0]
    full = torch.full((b, 1), budget.full_view, dtype=torch.int64)
    if budget.cells == 0:
        return full
    marked = (stable_descending_rank(early_full) < budget.marked).to(torch.int64)  # [B, N]
    counts = (marked.unsqueeze(-1) * regions).sum(1)  # [B, C], elementwise: no float matmul on ints
    return torch.cat([full, cell_budgets(counts, budget.sub_total, budget.tokens_per_partition)], -1)


def keep_mask(scores: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
    """[B, P, N] selection scores, [B, P] budgets -> [B, P*N] bool, each partition's top-budget tokens."""
    keep = stable_descending_rank(scores) < budgets.unsqueeze(-1)
    return keep.flatten(1)


def kept_positions(keep: torch.Tensor, k: int) -> torch.Tensor:
    """[B, L] bool with exactly k True per row -> [B, k] int64 flat positions in ascending order.

    Slot of a kept token = number of kept tokens before it (cumsum); a one-hot [k, L] match
    places each position in its slot. Exact integer arithmetic, no sort.
    """
    keep_i = keep.to(torch.int64)
    slot = torch.cumsum(keep_i, -1) - 1  # [B, L]
    slot = torch.where(keep, slot, torch.full_like(slot, -1))
    hit = (slot.unsqueeze(1) == torch.arange(k).view(1, k, 1)).to(torch.int64)  # [B, k, L]
    return (hit * torch.arange(keep.shape[-1]).view(1, 1, -1)).sum(-1)


def gather_tokens(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """[B, L, D], [B, K] -> [B, K, D]."""
    return torch.gather(tokens, 1, positions.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
