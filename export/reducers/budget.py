"""HiRED budget arithmetic in plain Python: the static numbers fixed at export time.

Partitions are the full view (index 0) followed by the grid cells in row-major order.
Every partition holds ``N`` patch tokens. The rule, for a total budget ``K``:

* full-view budget ``F = clamp(int(K * alpha), K - C * N, N)`` where ``C`` is the number of
  cells (the lower bound only matters when ``K`` is so large that the cells cannot absorb the rest);
* the cells share ``K - F``, in proportion to how many of the full view's top
  ``M = int(N * (1 - alpha))`` early-layer tokens fall inside each cell's 2-D region, with cells
  capped at ``N`` and largest-remainder rounding so the shares sum exactly (see
  ``sub_budgets_reference``).

This module holds no torch: plain integer arithmetic, the same rule the graph computes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

from edgetrim.runtime.errors import UserError


@dataclass(frozen=True)
class HiredBudget:
    """Static HiRED numbers for one export."""

    total: int  # K, tokens handed to the projector / LLM
    full_view: int  # F, kept from the full view
    sub_total: int  # K - F, shared by the grid cells
    marked: int  # M, full-view tokens marked by the early layer to allocate the cells' share
    partitions: int  # P = 1 + C
    tokens_per_partition: int  # N
    alpha: float

    @property
    def cells(self) -> int:
        return self.partitions - 1

    def to_dict(self) -> dict:
        return asdict(self)


def parse_budget(text: str | float | int) -> float | int:
    """'0.2' -> fraction 0.2; '230' -> absolute K 230. A fraction needs a decimal point."""
    raw = str(text).strip()
    try:
        value: float | int = int(raw) if raw.lstrip("+-").isdigit() else float(raw)
    except ValueError:
        raise UserError(
            f"`budget` {raw!r} is not a number: pass a fraction like 0.2 or a token count like 230"
        ) from None
    if isinstance(value, int):
        if value <= 0:
            raise UserError(f"`budget` {value} must be positive: pass a fraction in (0, 1] or a token count >= 1")
        return value
    if not 0.0 < value <= 1.0:
        raise UserError(
            f"`budget` {value} is outside (0, 1]: pass a fraction like 0.2, or an integer token count like 230"
        )
    return value


def resolve_budget(budget: float | int, partitions: int, tokens_per_partition: int, alpha: float) -> HiredBudget:
    """Turn a fraction (int(P*N*r), as HiRED does) or an absolute K into the static HiRED numbers."""
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"`alpha` {alpha} is outside [0, 1]: the paper's default is 0.5")
    n, p = tokens_per_partition, partitions
    available = p * n
    k = int(available * budget) if isinstance(budget, float) else int(budget)
    if k <= 0:
        raise UserError(f"`budget` {budget} keeps no token out of {available}: raise it")
    if k > available:
        raise UserError(
            f"`budget` {budget} asks for K={k} tokens but the image has only {available} "
            f"({p} partitions x {n}): pass at most {available}"
        )
    cells = p - 1
    if cells == 0:
        full = k
    else:
        full = min(max(int(k * alpha), k - cells * n), n)
    return HiredBudget(
        total=k,
        full_view=full,
        sub_total=k - full,
        marked=int(n * (1 - alpha)) if cells else 0,
        partitions=p,
        tokens_per_partition=n,
        alpha=alpha,
    )


def sub_budgets_reference(counts: list[int], sub_total: int, cap: int) -> list[int]:
    """Cells' budgets from their marked-token counts, written plainly with exact fractions.

    Proportional shares ``count_i / sum(count) * sub_total``; a cell whose share reaches ``cap``
    gets ``cap`` and leaves the others to split the rest (repeated until no cell overflows);
    the free cells get ``floor(share)`` and the leftover tokens go one each to the largest
    fractional parts, ties to the lower cell index. If every free cell has count 0 the free
    cells share equally. Requires ``sub_total <= len(counts) * cap``.
    """
    capped: set[int] = set()
    while True:
        free = [i for i in range(len(counts)) if i not in capped]
        left = sub_total - cap * len(capped)
        weights = {i: counts[i] for i in free}
        if free and sum(weights.values()) == 0:
            weights = {i: 1 for i in free}
        total_w = sum(weights.values())
        shares = {i: Fraction(weights[i] * left, total_w) if total_w else Fraction(0) for i in free}
        over = {i for i in free if shares[i] >= cap}
        if not over:
            break
        capped |= over
    budgets = [cap if i in capped else int(shares[i]) for i in range(len(counts))]
    leftover = sub_total - sum(budgets)
    by_fraction = sorted(free, key=lambda i: (-(shares[i] - int(shares[i])), i))
    for i in by_fraction[:leftover]:
        budgets[i] += 1
    return budgets
