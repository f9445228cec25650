"""The language model of a LLaVA-style VLM as static-shape stages with a static KV cache.

Attention, RoPE, RMSNorm and the MLP are written out here from the transformers module's weights
(Qwen2 / Llama / Mistral ``*ForCausalLM``, or the ``language_model`` inside ``Llava*``), so every
graph has fixed shapes and no data-dependent op (no scatter / index_put / sort).

Two graphs, each chunked by the same layer groups plus a head chunk:

Prefill  ``inputs_embeds`` [1, P, D] (P static; prompts shorter than P are right-padded, causal
         attention keeps the padding out of the real positions) -> per layer
         ``present_key_XX`` / ``present_value_XX`` [1, KV, L, hd] (rows 0..P-1 filled, zeros after)
         and ``hidden_XX`` [1, P, D] between chunks. Head: ``hidden_<n>`` + ``last_index`` int64 [1]
         (the last real prompt position) -> ``logits`` [1, V].
Decode   ``inputs_embeds`` [1, 1, D], ``position`` int64 [1], ``past_key_XX`` / ``past_value_XX``
         [1, KV, L, hd] -> ``present_*`` (the new row blended in at ``position`` with a one-hot mask),
         attention over the slots ``arange(L) <= position``; head -> ``logits`` [1, V].

On ONNX the layer groups are ``FusedStage``: the same inputs and outputs, written with ONNX Runtime's contrib
ops (packed q/k/v MatMul, GroupQueryAttention with its rotary over the static cache, SkipSimplifiedLayerNormalization;
``edgetrim.export.stages.fused``), about 12 nodes a layer instead of about 60; present rows after the last
written position are zero there. Core ML and ExecuTorch export the written-out layers.

The token-embedding table goes beside the chunks as a top-level ``embedding`` file [V, D] (int8 with
per-row scales in quantized exports), so the runtime embeds text without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgetrim.export.families.decoder import split_causal_lm
from edgetrim.export.stages import fused as fused_ops
from edgetrim.export.stages.base import Stage, block_groups, run_stages
from edgetrim.runtime.contract import (
    EMBEDDING_FLOAT16,
    EMBEDDING_FLOAT32,
    EMBEDDING_INT8,
    INPUTS_EMBEDS,
    LAST_INDEX,
    LOGITS,
    POSITION,
    cache_names,
    hidden_name,
    past_names,
    present_names,
)
from edgetrim.runtime.errors import UserError

EMBEDDING_FP16_BYTES = 256 << 20


def layer_input(layer: int) -> str:
    """Name of the hidden state entering ``layer`` (the embeddings for layer 0)."""
    return INPUTS_EMBEDS if layer == 0 else hidden_name(layer)


@dataclass(frozen=True)
class LlmDims:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_len: int  # L: KV-cache slots
    prefill_len: int  # P: static prefill length

    def to_dict(self) -> dict:
        return {
            "hidden_size": self.hidden,
            "num_layers": self.layers,
            "num_heads": self.heads,
            "num_kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab,
            "max_length": self.max_len,
            "prefill_length": self.prefill_len,
        }


class LanguageModel(nn.Module):
    """The parts every stage reads: decoder layers, final norm, lm_head, RoPE tables [L, hd]."""

    def __init__(self, model: nn.Module, max_len: int, prefill_lengths: int | list[int], fused: bool = False) -> None:
        """``prefill_lengths``: P, or every prefill length the export holds (buckets; the largest is P).
        ``fused``: the layer groups are ``FusedStage`` (ONNX Runtime's contrib ops; the ONNX target)."""
        super().__init__()
        self.prefill_lengths = sorted([prefill_lengths] if isinstance(prefill_lengths, int) else prefill_lengths)
        prefill_len = self.prefill_lengths[-1]
        decoder, self.lm_head = split_causal_lm(model)
        config = decoder.config
        window = getattr(config, "sliding_window", None)
        if window is not None and window < max_len:
            raise UserError(f"sliding-window attention ({window}) shorter than the cache ({max_len}) is not supported")
        if getattr(decoder.rotary_emb, "rope_type", "default") in ("dynamic", "longrope"):
            raise UserError("RoPE that rescales with the sequence length (dynamic, longrope) is not supported")
        if not 0 < self.prefill_lengths[0] <= prefill_len <= max_len:
            raise UserError(f"`prefill_length` {prefill_len} must be in 1..{max_len} (`max_length`, the cache length)")
        self.embed_tokens, self.layers, self.norm = decoder.embed_tokens, decoder.layers, decoder.norm
        attn = self.layers[0].self_attn
        self.dims = LlmDims(
            hidden=config.hidden_size,
            layers=len(self.layers),
            heads=config.num_attention_heads,
            kv_heads=config.num_key_value_heads,
            head_dim=attn.head_dim,
            vocab=self.lm_head.out_features,
            max_len=max_len,
            prefill_len=prefill_len,
        )
        with torch.no_grad():
            positions = torch.arange(max_len)[None]
            cos, sin = decoder.rotary_emb(torch.zeros(1, dtype=torch.float32), positions)
        self.register_buffer("cos", cos[0].float().contiguous(), persistent=False)
        self.register_buffer("sin", sin[0].float().contiguous(), persistent=False)
        self.fused = fused
        if fused:
            half = self.dims.head_dim // 2
            if not torch.equal(self.cos[:, :half], self.cos[:, half:]):
                raise UserError("RoPE whose halves differ (not rotate_half) cannot use GroupQueryAttention's rotary")
            self.packed_qkv = nn.ModuleList(pack_qkv(layer.self_attn) for layer in self.layers)
        self.architecture = type(model).__name__
        self.model_type = config.model_type

    def embedding_table(self) -> np.ndarray:
        """[V, D] float32."""
        return self.embed_tokens.weight.detach().float().numpy()


def pack_qkv(attn: nn.Module) -> nn.Linear:
    """q_proj, k_proj and v_proj as one Linear D -> (H + 2 KV) hd (rows q, then k, then v)."""
    parts = (attn.q_proj, attn.k_proj, attn.v_proj)
    bias = parts[0].bias is not None
    packed = nn.Linear(parts[0].in_features, sum(p.out_features for p in parts), bias=bias)
    with torch.no_grad():
        packed.weight.copy_(torch.cat([p.weight for p in parts]))
        if bias:
            packed.bias.copy_(torch.cat([p.bias for p in parts]))
    return packed


def rms_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[..., D] -> [..., D]: x / rms(x) * weight, in float32 as transformers does."""
    return norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon))


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [1, H, T, hd], cos/sin [T, hd] -> rotated x (rotate_half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def mlp(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return block.down_proj(block.act_fn(block.gate_proj(x)) * block.up_proj(x))


class LayerMath:
    """One decoder layer's projections and grouped-query attention for T new tokens against S slots."""

    def __init__(self, dims: LlmDims) -> None:
        self.dims = dims
        self.groups = dims.heads // dims.kv_heads

    def qkv(self, attn: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x [1, T, D] -> q [1, H, T, hd], k and v [1, KV, T, hd]; q and k rotated."""
        t, hd = x.shape[1], self.dims.head_dim
        q = attn.q_proj(x).view(1, t, self.dims.heads, hd).transpose(1, 2)
        k = attn.k_proj(x).view(1, t, self.dims.kv_heads, hd).transpose(1, 2)
        v = attn.v_proj(x).view(1, t, self.dims.kv_heads, hd).transpose(1, 2)
        return rope(q, cos, sin), rope(k, cos, sin), v

    def attend(self, attn: nn.Module, q, keys, values, bias: torch.Tensor) -> torch.Tensor:
        """q [1, H, T, hd], keys/values [1, KV, S, hd], bias [G*T, S] (0 or -inf) -> o_proj output [1, T, D].

        Query head h uses kv head h // G (transformers' repeat_kv); the G query heads of a kv head are
        stacked as G*T rows instead of repeating the keys, so the cache is never copied G times.
        """
        t, kv, hd = q.shape[2], self.dims.kv_heads, self.dims.head_dim
        scores = torch.matmul(q.reshape(1, kv, self.groups * t, hd), keys.transpose(2, 3)) * attn.scaling
        out = torch.matmul(torch.softmax(scores + bias, dim=-1), values)  # [1, KV, G*T, hd]
        return attn.o_proj(out.view(1, self.dims.heads, t, hd).transpose(1, 2).reshape(1, t, -1))


class PrefillStage(Stage):
    """Layers [start, stop) over ``length`` positions (a prefill bucket, at most P): hidden -> hidden,
    present key/value per layer."""

    def __init__(self, lm: LanguageModel, start: int, stop: int, length: int) -> None:
        super().__init__()
        p, self.math = length, LayerMath(lm.dims)
        self.start, self.stop, self.pad = start, stop, lm.dims.max_len - p
        self.layers = nn.ModuleList(lm.layers[start:stop])
        self.register_buffer("cos", lm.cos[:p].clone(), persistent=False)
        self.register_buffer("sin", lm.sin[:p].clone(), persistent=False)
        causal = torch.zeros(p, p).masked_fill(torch.ones(p, p, dtype=torch.bool).triu(1), float("-inf"))
        self.register_buffer("bias", causal.repeat(self.math.groups, 1), persistent=False)  # [G*P, P]
        self.input_names = [layer_input(start)]
        self.output_names = [hidden_name(stop)] + [n for i in range(start, stop) for n in present_names(i)]

    def forward(self, hidden: torch.Tensor):
        """hidden [1, length, D] -> (hidden [1, length, D], key_i, value_i [1, KV, L, hd] ...)."""
        caches = []
        for layer in self.layers:
            attn = layer.self_attn
            q, k, v = self.math.qkv(attn, rms_norm(layer.input_layernorm, hidden), self.cos, self.sin)
            hidden = hidden + self.math.attend(attn, q, k, v, self.bias)
            hidden = hidden + mlp(layer.mlp, rms_norm(layer.post_attention_layernorm, hidden))
            caches += [nn.functional.pad(k, (0, 0, 0, self.pad)), nn.functional.pad(v, (0, 0, 0, self.pad))]
        return (hidden, *caches)


class DecodeStage(Stage):
    """Layers [start, stop) for one token at ``position``: hidden, past caches -> hidden, present caches."""

    def __init__(self, lm: LanguageModel, start: int, stop: int) -> None:
        super().__init__()
        self.math, self.start, self.stop = LayerMath(lm.dims), start, stop
        self.layers = nn.ModuleList(lm.layers[start:stop])
        self.register_buffer("cos", lm.cos.clone(), persistent=False)
        self.register_buffer("sin", lm.sin.clone(), persistent=False)
        self.register_buffer("slots", torch.arange(lm.dims.max_len), persistent=False)
        self.input_names = [layer_input(start), POSITION] + [n for i in range(start, stop) for n in past_names(i)]
        self.output_names = [hidden_name(stop)] + [n for i in range(start, stop) for n in present_names(i)]

    def forward(self, hidden: torch.Tensor, position: torch.Tensor, *past: torch.Tensor):
        """hidden [1, 1, D], position int64 [1], past key/value [1, KV, L, hd] per layer -> updated."""
        cos, sin = self.cos.index_select(0, position), self.sin.index_select(0, position)  # [1, hd]
        onehot = (self.slots == position).to(hidden.dtype).view(1, 1, -1, 1)  # [1, 1, L, 1]
        bias = torch.where(self.slots <= position, 0.0, float("-inf")).view(1, -1)  # [1, L]
        caches = []
        for j, layer in enumerate(self.layers):
            attn = layer.self_attn
            q, k, v = self.math.qkv(attn, rms_norm(layer.input_layernorm, hidden), cos, sin)
            keys = past[2 * j] * (1 - onehot) + k * onehot
            values = past[2 * j + 1] * (1 - onehot) + v * onehot
            hidden = hidden + self.math.attend(attn, q, keys, values, bias)
            hidden = hidden + mlp(layer.mlp, rms_norm(layer.post_attention_layernorm, hidden))
            caches += [keys, values]
        return (hidden, *caches)


class FusedStage(Stage):
    """Layers [start, stop) written with ``edgetrim.export.stages.fused`` (on ONNX: packed-QKV MatMul,
    GroupQueryAttention with its rotary, SkipSimplifiedLayerNormalization): the inputs and outputs of
    ``PrefillStage`` (``length`` positions from empty caches) or, ``length`` None, of ``DecodeStage``. Present rows
    after the last written position are zero."""

    def __init__(self, lm: LanguageModel, start: int, stop: int, length: int | None) -> None:
        super().__init__()
        d, half = lm.dims, lm.dims.head_dim // 2
        self.dims, self.length = d, length
        self.layers = nn.ModuleList(lm.layers[start:stop])
        self.qkv = nn.ModuleList(lm.packed_qkv[start:stop])
        self.register_buffer("cos", lm.cos[:, :half].clone(), persistent=False)
        self.register_buffer("sin", lm.sin[:, :half].clone(), persistent=False)
        pasts = [n for i in range(start, stop) for n in past_names(i)]
        self.input_names = [layer_input(start)] + ([] if length else [POSITION, *pasts])
        self.output_names = [hidden_name(stop)] + [n for i in range(start, stop) for n in present_names(i)]
        if length:
            self.register_buffer("empty", torch.zeros(1, d.kv_heads, d.max_len, d.head_dim), persistent=False)
            self.register_buffer("last", torch.tensor([length - 1], dtype=torch.int32), persistent=False)

    def forward(self, hidden: torch.Tensor, *rest: torch.Tensor):
        """Prefill: hidden [1, length, D]; decode: hidden [1, 1, D], position int64 [1], past key / value
        [1, KV, L, hd] per layer -> (hidden, present key / value per layer)."""
        if self.length:
            seqlens, past = self.last, [self.empty] * (2 * len(self.layers))
        else:
            seqlens, past = rest[0].to(torch.int32), rest[1:]
        total = (seqlens + 1).reshape(())
        d, caches = self.dims, []
        x = rms_norm(self.layers[0].input_layernorm, hidden)
        for j, layer in enumerate(self.layers):
            attn, norm = layer.self_attn, layer.post_attention_layernorm
            out, key, value = fused_ops.gqa(
                self.qkv[j](x), past[2 * j], past[2 * j + 1], seqlens, total, self.cos, self.sin,
                d.heads, d.kv_heads, attn.scaling,
            )  # fmt: skip
            x, hidden = fused_ops.add_rms_norm(attn.o_proj(out), hidden, norm.weight, norm.variance_epsilon)
            update = mlp(layer.mlp, x)
            if j + 1 < len(self.layers):
                norm = self.layers[j + 1].input_layernorm
                x, hidden = fused_ops.add_rms_norm(update, hidden, norm.weight, norm.variance_epsilon)
            else:
                hidden = hidden + update
            caches += [key, value]
        return (hidden, *caches)


class StatefulPrefillStage(PrefillStage):
    """``PrefillStage`` whose caches go into model state (``cache_names``, [1, KV, L, hd] buffers written
    in place) instead of outputs: hidden -> hidden. For Core ML ``StateType`` (iOS 18)."""

    def __init__(self, lm: LanguageModel, start: int, stop: int, length: int) -> None:
        super().__init__(lm, start, stop, length)
        register_caches(self, lm.dims, start, stop)
        self.output_names = [hidden_name(stop)]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [1, length, D] -> hidden [1, length, D]; every cache row overwritten (rows >= length zero)."""
        hidden, *caches = super().forward(hidden)
        for name, cache in zip(self.state_names, caches, strict=True):
            getattr(self, name).copy_(cache)
        return hidden


class StatefulDecodeStage(DecodeStage):
    """``DecodeStage`` over caches held as model state, updated in place: hidden, position -> hidden."""

    def __init__(self, lm: LanguageModel, start: int, stop: int) -> None:
        super().__init__(lm, start, stop)
        register_caches(self, lm.dims, start, stop)
        self.input_names = [layer_input(start), POSITION]
        self.output_names = [hidden_name(stop)]

    def forward(self, hidden: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """hidden [1, 1, D], position int64 [1] -> hidden [1, 1, D]; cache row ``position`` written."""
        hidden, *caches = super().forward(hidden, position, *(getattr(self, n) for n in self.state_names))
        for name, cache in zip(self.state_names, caches, strict=True):
            getattr(self, name).copy_(cache)
        return hidden


def register_caches(stage: Stage, dims: LlmDims, start: int, stop: int) -> None:
    """Zero KV-cache buffers [1, KV, L, hd] of layers [start, stop), named ``cache_names``, in ``state_names``."""
    stage.state_names = [n for i in range(start, stop) for n in cache_names(i)]
    for name in stage.state_names:
        stage.register_buffer(name, torch.zeros(1, dims.kv_heads, dims.max_len, dims.head_dim))


class HeadStage(Stage):
    """Final norm + lm_head on one position: prefill picks ``last_index`` of [1, P, D]; decode has [1, 1, D]."""

    def __init__(self, lm: LanguageModel, prefill: bool) -> None:
        super().__init__()
        self.norm, self.lm_head, self.prefill = lm.norm, lm.lm_head, prefill
        self.input_names = [hidden_name(lm.dims.layers)] + ([LAST_INDEX] if prefill else [])
        self.output_names = [LOGITS]

    def forward(self, hidden: torch.Tensor, last_index: torch.Tensor | None = None) -> torch.Tensor:
        """-> logits [1, V]."""
        if self.prefill:
            hidden = hidden.index_select(1, last_index)
        return self.lm_head(rms_norm(self.norm, hidden[:, 0]))


def build_llm_stages(
    lm: LanguageModel, groups: list[tuple[int, int]], prefill_length: int | None, stateful: bool = False
) -> list[Stage]:
    """Layer-group stages and the head: prefill over ``prefill_length`` positions, or decode (None);
    ``stateful``: the caches as model state (``Stateful*Stage``), not inputs / outputs; ``lm.fused``: ``FusedStage``."""
    if lm.fused:
        if stateful:
            raise UserError("fused layers keep their caches as inputs / outputs: export them with `kv_cache` io")
        head = HeadStage(lm, prefill=prefill_length is not None)
        return [*(FusedStage(lm, a, b, prefill_length) for a, b in groups), head]
    if prefill_length is None:
        decode = StatefulDecodeStage if stateful else DecodeStage
        return [*(decode(lm, a, b) for a, b in groups), HeadStage(lm, prefill=False)]
    prefill = StatefulPrefillStage if stateful else PrefillStage
    return [*(prefill(lm, a, b, prefill_length) for a, b in groups), HeadStage(lm, prefill=True)]


def prefill_feeds(lm: LanguageModel, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Example prefill inputs: seeded embeddings [1, length, D] filling every position."""
    embeds = torch.randn(1, length, lm.dims.hidden, generator=torch.Generator().manual_seed(seed)) * 0.02
    return {INPUTS_EMBEDS: embeds, LAST_INDEX: torch.tensor([length - 1])}


def decode_feeds(lm: LanguageModel, seed: int = 0) -> dict[str, torch.Tensor]:
    """Example decode inputs: the caches of a full prefill of P, the next token at position P."""
    d = lm.dims
    prefill = prefill_feeds(lm, d.prefill_len, seed)
    env = run_stages(build_llm_stages(lm, block_groups(d.layers, 1), d.prefill_len), prefill)
    embeds = prefill[INPUTS_EMBEDS]
    decode = {INPUTS_EMBEDS: embeds[:, -1:].clone(), POSITION: torch.tensor([min(d.prefill_len, d.max_len - 1)])}
    for i in range(d.layers):
        decode.update(zip(past_names(i), (env[n] for n in present_names(i)), strict=True))
    return decode


def embedding_dtype_for(dims: LlmDims, quantized: bool) -> str:
    """The [V, D] table on disk: int8 with per-row scales when the export is ``quantized``
    (``edgetrim.runtime.embedding``); else float16 when it is over 256 MB in float32 (Qwen2-0.5B: 151936 x 896 =
    545 MB), float32 otherwise. The lm_head stays inside the head chunks; the runtime widens looked-up rows."""
    if quantized:
        return EMBEDDING_INT8
    return EMBEDDING_FLOAT16 if dims.vocab * dims.hidden * 4 > EMBEDDING_FP16_BYTES else EMBEDDING_FLOAT32
