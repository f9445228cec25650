"""Fused decoder-layer operators as torch custom ops: the eager code is the reference math (what validation
compares against); the ONNX target lowers each op to one ONNX Runtime contrib op
(``edgetrim.export.targets.onnx_fused``), so a layer is about 12 nodes instead of about 60.

``edgetrim::add_rms_norm``  x, residual [..., D], weight [D] -> (rms_norm(x + residual) * weight, x + residual)
                           (com.microsoft SkipSimplifiedLayerNormalization)
``edgetrim::gqa``          packed qkv [1, T, (H + 2 KV) hd], past key / value [1, KV, L, hd], ``seqlens_k`` int32 [1]
                           (the last new position), ``total`` int32 [] (= seqlens_k + 1), cos / sin [L, hd / 2]
                           -> (attention output [1, T, H hd], present key / value [1, KV, L, hd])
                           (com.microsoft GroupQueryAttention with its rotary: rotate_half convention). The T new
                           tokens sit at positions total - T .. total - 1; present = past with those rows written
                           and the rows from ``total`` on zero; token t attends rows 0 .. its own position.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.library.custom_op("edgetrim::add_rms_norm", mutates_args=())
def add_rms_norm(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    total = x + residual
    return weight * (total * torch.rsqrt(total.pow(2).mean(-1, keepdim=True) + eps)), total


@add_rms_norm.register_fake
def _(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(x)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [1, heads, T, hd], cos / sin [T, hd / 2] -> x rotated (rotate_half: halves are the pairs)."""
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)


@torch.library.custom_op("edgetrim::gqa", mutates_args=())
def gqa(
    qkv: Tensor,
    past_key: Tensor,
    past_value: Tensor,
    seqlens_k: Tensor,
    total: Tensor,
    cos: Tensor,
    sin: Tensor,
    heads: int,
    kv_heads: int,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    t, (_, _, slots, hd) = qkv.shape[1], past_key.shape
    end = int(total)
    start = end - t
    q, k, v = qkv.view(1, t, heads + 2 * kv_heads, hd).transpose(1, 2).split([heads, kv_heads, kv_heads], dim=1)
    q, k = rotate(q, cos[start:end], sin[start:end]), rotate(k, cos[start:end], sin[start:end])
    rows = torch.arange(slots)
    keep = (rows < start).view(1, 1, slots, 1)
    keys = torch.where(keep, past_key, 0.0).index_copy(2, torch.arange(start, end), k)
    values = torch.where(keep, past_value, 0.0).index_copy(2, torch.arange(start, end), v)
    groups = heads // kv_heads
    scores = torch.matmul(q.reshape(1, kv_heads, groups * t, hd), keys.transpose(2, 3)) * scale
    visible = rows[None, :] <= torch.arange(start, end).repeat(groups)[:, None]  # [G*T, L]
    out = torch.matmul(torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1), values)
    return out.view(1, heads, t, hd).transpose(1, 2).reshape(1, t, heads * hd), keys, values


@gqa.register_fake
def _(qkv, past_key, past_value, seqlens_k, total, cos, sin, heads, kv_heads, scale):
    t, hd = qkv.shape[1], past_key.shape[-1]
    return qkv.new_empty(1, t, heads * hd), torch.empty_like(past_key), torch.empty_like(past_value)
