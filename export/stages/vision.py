"""The exported modules: ViT over all partitions, HiRED selection, gather, projector.

The encoder is three kinds of stage, so that an unchunked artifact and a chunked one run the very
same code: ``EmbedStage`` (pixels -> hidden), ``BlockStage`` (a run of transformer blocks, also
emitting the early / selection scores when it holds those layers), ``HeadStage`` (HiRED budgets,
selection, gather, projector). ``ReducedVisionEncoder`` chains them.

Input  ``pixel_values``       float32 [1, P, 3, S, S]  (full view first, then grid cells row-major)
Output ``tokens``             float   [1, K, D_out]     (projector space when the model has one)
       ``positions``          int64   [1, K]            flat index p*N + row*n + col, ascending
       ``partition_budgets``  int64   [1, P]            tokens kept per partition, summing to K
Between stages: ``hidden_<i>`` [B*P, T, D] (input of layer i), ``early_scores`` / ``select_scores`` [B*P, N].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgetrim.export.families.vision import VisionTower
from edgetrim.export.reducers import hired
from edgetrim.export.reducers.budget import HiredBudget
from edgetrim.export.stages.base import Stage
from edgetrim.runtime import contract
from edgetrim.runtime.contract import EARLY_SCORES as EARLY
from edgetrim.runtime.contract import SELECT_SCORES as SELECT
from edgetrim.runtime.contract import hidden_name

INPUT_NAMES = [contract.PIXEL_VALUES]
OUTPUT_NAMES = [contract.TOKENS, contract.POSITIONS, contract.PARTITION_BUDGETS]


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


class EmbedStage(Stage):
    def __init__(self, tower: VisionTower) -> None:
        super().__init__()
        self.tower = tower
        self.input_names, self.output_names = list(INPUT_NAMES), [hidden_name(0)]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.tower.embed(pixel_values.flatten(0, 1))


class BlockStage(Stage):
    """Layers [start, stop); emits the early / selection scores of the layers it holds."""

    def __init__(self, tower: VisionTower, plan: ReductionPlan, start: int, stop: int) -> None:
        super().__init__()
        self.tower, self.start, self.stop = tower, start, stop
        self.blocks = nn.ModuleList(tower.layers[start:stop])
        hiring = plan.method == "hired"
        last = len(tower.layers) - 1
        self.early_at = plan.early_layer if hiring and start <= plan.early_layer < stop else None
        self.select_at = last if hiring and start <= last < stop else None
        self.input_names = [hidden_name(start)]
        self.output_names = [hidden_name(stop)]
        self.output_names += [EARLY] if self.early_at is not None else []
        self.output_names += [SELECT] if self.select_at is not None else []

    def token_scores(self, layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """[P, T, D] input of ``layer`` -> [P, N]: CLS attention, or received attention without CLS."""
        q, k = self.tower.qk(layer, hidden)
        if self.tower.has_cls:
            return hired.cls_attention_scores(q, k)
        return hired.received_attention_scores(q, k)

    def forward(self, hidden: torch.Tensor):
        scores = {}
        for i, layer in zip(range(self.start, self.stop), self.blocks, strict=True):
            if i == self.early_at:
                scores[EARLY] = self.token_scores(layer, hidden)
            if i == self.select_at:
                scores[SELECT] = self.token_scores(layer, hidden)
            hidden = self.tower.run_layer(layer, hidden)
        extra = [scores[name] for name in self.output_names[1:]]
        return (hidden, *extra) if extra else hidden


class HeadStage(Stage):
    def __init__(self, tower: VisionTower, plan: ReductionPlan) -> None:
        super().__init__()
        self.tower, self.plan = tower, plan
        cells = plan.budget.cells
        self.register_buffer(
            "regions", hired.cell_regions(tower.side, plan.grid) if cells else torch.zeros(0, 0), persistent=False
        )
        self.input_names = [hidden_name(len(tower.layers))]
        self.input_names += [EARLY, SELECT] if plan.method == "hired" else []
        self.output_names = list(OUTPUT_NAMES)

    def forward(self, hidden: torch.Tensor, early: torch.Tensor | None = None, select: torch.Tensor | None = None):
        p, n = self.plan.partitions, self.tower.side**2
        b = hidden.shape[0] // p
        patches = self.tower.patch_tokens(hidden).reshape(b, p * n, -1)
        if self.plan.method == "hired":
            budgets = hired.partition_budgets(early.view(b, p, n)[:, 0], self.regions, self.plan.budget)
            keep = hired.keep_mask(select.view(b, p, n), budgets)
            positions = hired.kept_positions(keep, self.plan.budget.total)
            tokens = hired.gather_tokens(patches, positions)
        else:
            budgets = torch.full((b, p), n, dtype=torch.int64)
            positions = torch.arange(p * n).expand(b, -1)
            tokens = patches
        if self.tower.projector is not None:
            tokens = self.tower.projector(tokens)
        return tokens, positions, budgets


def build_stages(tower: VisionTower, plan: ReductionPlan, groups: list[tuple[int, int]]) -> list[Stage]:
    return [EmbedStage(tower), *(BlockStage(tower, plan, a, b) for a, b in groups), HeadStage(tower, plan)]


class ReducedVisionEncoder(Stage):
    """All stages chained: the unchunked artifact's module and the reference for every check."""

    def __init__(self, tower: VisionTower, plan: ReductionPlan, groups: list[tuple[int, int]] | None = None) -> None:
        super().__init__()
        self.tower, self.plan = tower, plan
        self.stages = nn.ModuleList(build_stages(tower, plan, groups or [(0, len(tower.layers))]))
        self.input_names, self.output_names = list(INPUT_NAMES), list(OUTPUT_NAMES)

    def forward(self, pixel_values: torch.Tensor):
        env = {INPUT_NAMES[0]: pixel_values}
        for stage in self.stages:
            out = stage(*(env[name] for name in stage.input_names))
            env.update(zip(stage.output_names, out if isinstance(out, tuple) else (out,), strict=True))
        return tuple(env[name] for name in OUTPUT_NAMES)
