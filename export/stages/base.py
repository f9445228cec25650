"""A stage is one chunk's module: named tensor inputs -> named tensor outputs (positional in ``forward``).

Stages of an artifact chain by name; ``run_stages`` is the PyTorch reference of a chunked run.
"""

from __future__ import annotations

import torch
from torch import nn


class Stage(nn.Module):
    input_names: list[str]
    output_names: list[str]


def run_stages(stages: list[nn.Module], feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Chain stages by name; returns every named tensor (feeds included)."""
    env = dict(feeds)
    with torch.no_grad():
        for stage in stages:
            out = stage(*(env[n] for n in stage.input_names))
            env.update(zip(stage.output_names, out if isinstance(out, tuple) else (out,), strict=True))
    return env


def stage_examples(stages: list[nn.Module], feeds: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
    """Each stage's example inputs (contiguous: CoreML needs them so) from one reference run of the chain."""
    env, examples = dict(feeds), []
    for stage in stages:
        examples.append(tuple(env[n].contiguous() for n in stage.input_names))
        env = run_stages([stage], env)
    return examples


def block_groups(num_layers: int, groups: int) -> list[tuple[int, int]]:
    """Split layers [0, L) into ``groups`` contiguous runs as even as possible."""
    groups = max(1, min(groups, num_layers))
    bounds = [round(i * num_layers / groups) for i in range(groups + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))
