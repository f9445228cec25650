"""The exported module: ViT over all partitions, HiRED selection, gather, projector.

Input  ``pixel_values``       float32 [B, P, 3, S, S]  (full view first, then grid cells row-major)
Output ``tokens``             float   [B, K, D_out]     (projector space when the model has one)
       ``positions``          int64   [B, K]            flat index p*N + row*n + col, ascending
       ``partition_budgets``  int64   [B, P]            tokens kept per partition, summing to K
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgetrim.calib.budgets import HiredBudget
from edgetrim.export.adapters import VisionTower
from edgetrim.export.reducers import hired

INPUT_NAMES = ["pixel_values"]
OUTPUT_NAMES = ["tokens", "positions", "partition_budgets"]


@dataclass(frozen=True)
class ReductionPlan:
    """What the graph keeps: ``method`` 'hired' or 'none', the static budget, the grid."""

    method: str
    grid: tuple[int, int]
    budget: HiredBudget
    early_layer: int = 0

    @property
    def partitions(self) -> int:
        return self.budget.partitions


class ReducedVisionEncoder(nn.Module):
    def __init__(self, tower: VisionTower, plan: ReductionPlan) -> None:
        super().__init__()
        self.tower = tower
        self.plan = plan
        regions = hired.cell_regions(tower.side, plan.grid) if plan.budget.cells else torch.zeros(0, 0)
        self.register_buffer("regions", regions, persistent=False)

    def token_scores(self, layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """[B*P, T, D] input of ``layer`` -> [B*P, N]: CLS attention, or received attention without CLS."""
        q, k = self.tower.qk(layer, hidden)
        if self.tower.has_cls:
            return hired.cls_attention_scores(q, k)
        return hired.received_attention_scores(q, k)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, p = pixel_values.shape[:2]
        n = self.tower.side**2
        hidden = self.tower.embed(pixel_values.flatten(0, 1))
        hiring = self.plan.method == "hired"
        last = len(self.tower.layers) - 1
        early = select = None
        for i, layer in enumerate(self.tower.layers):
            if hiring and i == self.plan.early_layer:
                early = self.token_scores(layer, hidden)
            if hiring and i == last:
                select = self.token_scores(layer, hidden)
            hidden = self.tower.run_layer(layer, hidden)
        patches = self.tower.patch_tokens(hidden).reshape(b, p * n, -1)
        k = self.plan.budget.total
        if hiring:
            budgets = hired.partition_budgets(early.view(b, p, n)[:, 0], self.regions, self.plan.budget)
            keep = hired.keep_mask(select.view(b, p, n), budgets)
            positions = hired.kept_positions(keep, k)
            tokens = hired.gather_tokens(patches, positions)
        else:
            budgets = torch.full((b, p), n, dtype=torch.int64)
            positions = torch.arange(p * n).expand(b, -1)
            tokens = patches
        if self.tower.projector is not None:
            tokens = self.tower.projector(tokens)
        return tokens, positions, budgets
