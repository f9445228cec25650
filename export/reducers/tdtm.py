"""TDTM (Temporal Dimension Token Merging, On-device Sora) as pure, static-shape tensor functions.

Consecutive frame pairs are merged by averaging, ``x' = (x[2i] + x[2i+1]) / 2``, before a sub-layer
(spatial self-attention, temporal self-attention, cross-attention) and unmerged by repeating each
merged frame twice before the residual add. Two layouts, the same operation:

- frame-major ``[B, T*S, C]`` (tokens of frame 0, then frame 1, ...): ``merge_frames`` / ``unmerge_frames``
- per-position ``[B*S, T, C]`` (a temporal sequence per spatial position): ``merge_pairs`` / ``unmerge_pairs``

Odd T is refused (``ValueError``): no padding policy, the caller must export an even frame count.
Only slicing, add and reshape are used (no sort/scatter), so every backend runs it.
"""

from __future__ import annotations

import torch


def check_frames(frames: int) -> int:
    """The merged frame count T/2; ValueError unless T is even and positive."""
    if frames <= 0 or frames % 2:
        raise ValueError(f"TDTM merges consecutive frame pairs: T={frames} must be even and positive")
    return frames // 2


def merge_pairs(x: torch.Tensor) -> torch.Tensor:
    """[N, T, C] -> [N, T/2, C]: mean of frames (2i, 2i+1)."""
    n, t, c = x.shape
    pairs = x.reshape(n, check_frames(t), 2, c)
    return (pairs[:, :, 0] + pairs[:, :, 1]) * 0.5


def unmerge_pairs(x: torch.Tensor) -> torch.Tensor:
    """[N, T/2, C] -> [N, T, C]: each merged frame repeated twice (repeat-interleave)."""
    n, t, c = x.shape
    return x.unsqueeze(2).expand(n, t, 2, c).reshape(n, 2 * t, c)


def merge_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """[B, T*S, C] frame-major -> [B, T/2*S, C]: mean of frames (2i, 2i+1) at every spatial position."""
    b, n, c = x.shape
    pairs = x.reshape(b, check_frames(frames), 2, n // frames, c)
    return ((pairs[:, :, 0] + pairs[:, :, 1]) * 0.5).reshape(b, n // 2, c)


def unmerge_frames(x: torch.Tensor, merged_frames: int) -> torch.Tensor:
    """[B, T/2*S, C] -> [B, T*S, C]: each merged frame's tokens repeated for both source frames."""
    b, n, c = x.shape
    per_frame = x.reshape(b, merged_frames, 1, n // merged_frames, c)
    return per_frame.expand(b, merged_frames, 2, n // merged_frames, c).reshape(b, 2 * n, c)


def merge_query_mask(mask: torch.Tensor, frames: int) -> torch.Tensor:
    """[B, T*S, L] query-by-caption mask (1 keep, 0 drop) -> [B, T/2*S, L] for the merged queries.

    A merged query may attend to a caption token only if both of its source queries could (logical AND).
    The model's own mask is per caption token ([B, 1, 1, L], broadcast over queries), which needs no
    halving; this is for callers holding a per-query mask.
    """
    b, n, length = mask.shape
    pairs = mask.reshape(b, check_frames(frames), 2, n // frames, length)
    return torch.minimum(pairs[:, :, 0], pairs[:, :, 1]).reshape(b, n // 2, length)
