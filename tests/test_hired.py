"""HiRED static graph vs a plain reference written from the method description (Python loops)."""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pytest
import torch

from edgetrim.export.families.vision import PRESETS, build_preset, build_vision_model
from edgetrim.export.reducers import hired
from edgetrim.export.reducers.budget import resolve_budget, sub_budgets_reference
from edgetrim.export.stages.vision import ReducedVisionEncoder, ReductionPlan

# ---------------------------------------------------------------- plain reference


def ref_full_budget(k: int, alpha: float, cells: int, n: int) -> int:
    if cells == 0:
        return k
    full = int(k * alpha)
    full = max(full, k - cells * n)  # the cells cannot hold more than N each
    return min(full, n)


def ref_cell_budgets(counts: list[int], total: int, cap: int) -> list[int]:
    """Proportional shares with caps (water-filling), floor, then largest remainders."""
    budgets: dict[int, int] = {}
    free = list(range(len(counts)))
    while True:
        left = total - sum(budgets.values())
        weights = [counts[i] for i in free]
        if sum(weights) == 0:
            weights = [1] * len(free)
        share = {i: Fraction(w * left, sum(weights)) for i, w in zip(free, weights, strict=True)}
        newly = [i for i in free if share[i] >= cap]
        if not newly:
            break
        for i in newly:
            budgets[i] = cap
        free = [i for i in free if i not in newly]
    for i in free:
        budgets[i] = share[i].numerator // share[i].denominator
    leftover = total - sum(budgets.values())
    order = sorted(free, key=lambda i: (share[i] - budgets[i], -i), reverse=True)
    for i in order[:leftover]:
        budgets[i] += 1
    return [budgets[i] for i in range(len(counts))]


def top_indices(scores, k: int) -> list[int]:
    """Indices of the k largest scores, ties to the lower index."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def ref_hired(early_full, select, side: int, grid: tuple[int, int], k: int, alpha: float):
    """early_full: [N] early-layer CLS scores of the full view; select: [P][N] feature-layer scores."""
    p, n = len(select), side * side
    cells = p - 1
    full = ref_full_budget(k, alpha, cells, n)
    budgets = [full]
    if cells:
        gh, gw = grid
        counts = [0] * cells
        for idx in top_indices(early_full, int(n * (1 - alpha))):
            row, col = divmod(idx, side)
            counts[(row * gh // side) * gw + col * gw // side] += 1
        budgets += ref_cell_budgets(counts, k - full, n)
    positions = []
    for part in range(p):
        positions += sorted(part * n + i for i in top_indices(select[part], budgets[part]))
    return budgets, positions


# ---------------------------------------------------------------- budget rule


@pytest.mark.parametrize("seed", range(40))
def test_cell_budget_rule_matches_reference_on_random_scores(seed):
    rng = random.Random(seed)
    side = rng.choice([4, 5, 7, 8, 12])
    grid = rng.choice([(2, 2), (1, 2), (2, 3), (3, 3), (2, 1)])
    if grid[0] > side or grid[1] > side:
        grid = (2, 2)
    n, cells = side * side, grid[0] * grid[1]
    alpha = rng.choice([0.0, 0.1, 0.3, 0.5, 0.8, 1.0])
    k = rng.randint(1, (cells + 1) * n)
    budget = resolve_budget(k, cells + 1, n, alpha)
    early = torch.rand(3, n, generator=torch.Generator().manual_seed(seed))
    got = hired.partition_budgets(early, hired.cell_regions(side, grid), budget)
    for b in range(3):
        want, _ = ref_hired(early[b].tolist(), [[0.0] * n] * (cells + 1), side, grid, k, alpha)
        assert got[b].tolist() == want, (side, grid, alpha, k)
        assert int(got[b].sum()) == k
        assert int(got[b].max()) <= n


def test_budget_rule_in_calib_agrees_with_test_reference():
    rng = random.Random(0)
    for _ in range(500):
        c = rng.randint(1, 9)
        cap = rng.randint(1, 30)
        counts = [rng.choice([0, 0, 1, 2, 5, 17]) for _ in range(c)]
        total = rng.randint(0, c * cap)
        assert sub_budgets_reference(counts, total, cap) == ref_cell_budgets(counts, total, cap)


def test_cells_are_true_2d_quadrants_not_row_major_strips():
    # Mark only the left half of a 4x4 full view: quadrants 0 and 2 (left column) get everything.
    side, grid = 4, (2, 2)
    early = torch.tensor([[1.0 if col < 2 else 0.0 for row in range(side) for col in range(side)]])
    early = early + torch.linspace(0, 1e-3, side * side)  # no ties
    budget = resolve_budget(16, 5, side * side, 0.5)  # full 8, cells share 8, marked 8
    got = hired.partition_budgets(early, hired.cell_regions(side, grid), budget)[0].tolist()
    assert got == [8, 4, 0, 4, 0]


def test_largest_remainder_sums_exactly_where_floor_would_lose_tokens():
    # 3 cells with equal counts sharing 10 tokens: floor gives 3+3+3 = 9; largest remainder gives 4,3,3.
    budgets = hired.cell_budgets(torch.tensor([[5, 5, 5]]), 10, 100)
    assert budgets.tolist() == [[4, 3, 3]]


def test_caps_redistribute_to_other_cells():
    budgets = hired.cell_budgets(torch.tensor([[10, 1, 0, 0]]), 40, 16)
    assert budgets.tolist() == [ref_cell_budgets([10, 1, 0, 0], 40, 16)] == [[16, 16, 4, 4]]


def test_stable_rank_matches_sorting():
    x = torch.tensor([[0.5, 0.1, 0.5, 0.9, 0.1]])
    assert hired.stable_descending_rank(x).tolist() == [[1, 3, 2, 0, 4]]


def test_kept_positions_are_the_true_entries_in_order():
    keep = torch.tensor([[False, True, True, False, True, False]])
    assert hired.kept_positions(keep, 3).tolist() == [[1, 2, 4]]


# ---------------------------------------------------------------- whole graph vs transformers' own attentions


def hf_scores(model, pixel_values, layer: int, has_cls: bool):
    with torch.no_grad():
        out = model(pixel_values, output_attentions=True, output_hidden_states=True)
    attn = out.attentions[layer]  # [B, H, T, T]
    scores = attn[:, :, 0, 1:].sum(1) if has_cls else attn.mean(2).sum(1)
    return scores, out.hidden_states


@pytest.mark.parametrize(
    "preset,grid,budget,alpha",
    [
        ("tiny-clip", (2, 2), 0.2, 0.5),
        ("tiny-clip", (2, 2), 0.6, 0.1),  # large budget: caps and the full-view lower bound kick in
        ("tiny-clip-odd", (2, 2), 0.3, 0.5),  # 7x7 patches: uneven cells
        ("tiny-clip-odd", (2, 3), 25, 0.4),  # absolute K
        ("tiny-clip", (1, 1), 0.25, 0.5),  # single view
        ("tiny-siglip", (2, 2), 0.2, 0.5),  # no CLS: received-attention score
        ("tiny-llava-next", (2, 2), 0.2, 0.5),  # projector after the gather
    ],
)
def test_graph_selects_what_the_reference_selects(preset, grid, budget, alpha):
    p = PRESETS[preset]
    tower = build_preset(preset)
    parts = 1 if grid == (1, 1) else 1 + grid[0] * grid[1]
    side = p.image_size // p.patch_size
    plan = ReductionPlan("hired", grid, resolve_budget(budget, parts, side * side, alpha))
    module = ReducedVisionEncoder(tower, plan).eval()
    hf = build_vision_model(p)
    hf.config._attn_implementation = "eager"
    x = torch.randn(2, parts, 3, p.image_size, p.image_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        tokens, positions, budgets = module(x)
    feature = p.feature_layer + p.layers  # index of the layer whose output LLaVA uses
    has_cls = p.family == "clip"
    for b in range(2):
        flat = x[b]
        early, _ = hf_scores(hf, flat, 0, has_cls)
        select, hidden = hf_scores(hf, flat, feature, has_cls)
        want_budgets, want_positions = ref_hired(
            early[0].tolist(), select.tolist(), side, grid, plan.budget.total, alpha
        )
        assert budgets[b].tolist() == want_budgets
        assert positions[b].tolist() == want_positions
        assert len(want_positions) == plan.budget.total == tokens.shape[1]
        patches = hidden[feature + 1][:, 1:] if has_cls else hidden[feature + 1]
        want_tokens = patches.reshape(-1, patches.shape[-1])[torch.tensor(want_positions)]
        if tower.projector is not None:
            with torch.no_grad():
                want_tokens = tower.projector(want_tokens)
        np.testing.assert_allclose(tokens[b].numpy(), want_tokens.numpy(), atol=1e-5)


def test_reduce_none_keeps_every_token_in_order():
    tower = build_preset("tiny-clip")
    plan = ReductionPlan("none", (2, 2), resolve_budget(1.0, 5, 64, 0.5))
    tokens, positions, budgets = ReducedVisionEncoder(tower, plan)(torch.randn(1, 5, 3, 64, 64))
    assert tokens.shape == (1, 320, 64)
    assert positions[0].tolist() == list(range(320))
    assert budgets.tolist() == [[64] * 5]
