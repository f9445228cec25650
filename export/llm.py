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

The token-embedding table is saved as ``embed_tokens.npy`` [V, D] (a top-level ``embedding``
file of the manifest) so the runtime embeds text without torch.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgetrim.export.artifact import file_entry, staging, write_json
from edgetrim.export.graph import Stage, block_groups, hidden_name
from edgetrim.export.loading import LLAVA_TYPES, load_state, read_config, read_tensors
from edgetrim.export.pipeline import SUFFIX, VERSION, ChunkExport, io_spec, write_chunk
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import MANIFEST, SCHEMA_VERSION

INPUTS_EMBEDS, POSITION, LAST_INDEX, LOGITS = "inputs_embeds", "position", "last_index", "logits"
EMBEDDING_FILE = "embed_tokens.npy"
EMBEDDING_FP16_BYTES = 256 << 20
# checkpoint tensor prefix -> name inside *ForCausalLM (first match wins)
LLAVA_PREFIXES = (
    ("model.language_model.", "model."),  # transformers >= 4.52 layout
    ("language_model.model.", "model."),  # older LLaVA layout
    ("language_model.lm_head.", "lm_head."),
    ("lm_head.", "lm_head."),
)
CAUSAL_LM_PREFIXES = (("model.", "model."), ("lm_head.", "lm_head."))


def layer_input(layer: int) -> str:
    """Name of the hidden state entering ``layer`` (the embeddings for layer 0)."""
    return INPUTS_EMBEDS if layer == 0 else hidden_name(layer)


def past_names(layer: int) -> list[str]:
    return [f"past_key_{layer:02d}", f"past_value_{layer:02d}"]


def present_names(layer: int) -> list[str]:
    return [f"present_key_{layer:02d}", f"present_value_{layer:02d}"]


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


def split_causal_lm(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder with embed_tokens/layers/norm/rotary_emb, lm_head) of a *ForCausalLM or a Llava* model."""
    inner = getattr(model, "model", None)
    decoder = getattr(inner, "language_model", inner)
    lm_head = getattr(model, "lm_head", None)
    if (
        decoder is None
        or lm_head is None
        or not all(hasattr(decoder, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb"))
    ):
        raise UserError(
            f"{type(model).__name__} is not a Llama / Mistral / Qwen2 causal LM or a LLaVA model holding one: "
            "pass such a checkpoint"
        )
    return decoder, lm_head


def load_causal_lm(folder: Path) -> nn.Module:
    """The ``*ForCausalLM`` of a folder saved with save_pretrained: a causal LM, or a LLaVA model's language model
    (only its tensors are read; the vision tower and projector are skipped)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    llava = read_config(folder).get("model_type") in LLAVA_TYPES
    config = AutoConfig.from_pretrained(folder)
    text_config = config.text_config if llava else config
    prefixes = LLAVA_PREFIXES if llava else CAUSAL_LM_PREFIXES

    def keep(name: str) -> str | None:
        return next((new + name[len(old) :] for old, new in prefixes if name.startswith(old)), None)

    state = read_tensors(folder, keep)
    # a stored lm_head is its own matrix (LLaVA wrappers untie it even when text_config says tied)
    text_config.tie_word_embeddings = "lm_head.weight" not in state
    model = AutoModelForCausalLM.from_config(text_config)
    if "lm_head.weight" not in state and "model.embed_tokens.weight" in state:  # tied embeddings
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    load_state(model, state, "language model", folder)
    return model.eval()


class LanguageModel(nn.Module):
    """The parts every stage reads: decoder layers, final norm, lm_head, RoPE tables [L, hd]."""

    def __init__(self, model: nn.Module, max_len: int, prefill_len: int) -> None:
        super().__init__()
        decoder, self.lm_head = split_causal_lm(model)
        config = decoder.config
        window = getattr(config, "sliding_window", None)
        if window is not None and window < max_len:
            raise UserError(f"sliding-window attention ({window}) shorter than the cache ({max_len}) is not supported")
        if getattr(decoder.rotary_emb, "rope_type", "default") in ("dynamic", "longrope"):
            raise UserError("RoPE that rescales with the sequence length (dynamic, longrope) is not supported")
        if not 0 < prefill_len <= max_len:
            raise UserError(f"prefill length {prefill_len} must be in 1..{max_len} (the cache length)")
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
        self.architecture = type(model).__name__
        self.model_type = config.model_type

    def embedding_table(self) -> np.ndarray:
        """[V, D] float32."""
        return self.embed_tokens.weight.detach().float().numpy()


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
    """Layers [start, stop) over P positions: hidden -> hidden, present key/value per layer."""

    def __init__(self, lm: LanguageModel, start: int, stop: int) -> None:
        super().__init__()
        p, self.math = lm.dims.prefill_len, LayerMath(lm.dims)
        self.start, self.stop, self.pad = start, stop, lm.dims.max_len - p
        self.layers = nn.ModuleList(lm.layers[start:stop])
        self.register_buffer("cos", lm.cos[:p].clone(), persistent=False)
        self.register_buffer("sin", lm.sin[:p].clone(), persistent=False)
        causal = torch.zeros(p, p).masked_fill(torch.ones(p, p, dtype=torch.bool).triu(1), float("-inf"))
        self.register_buffer("bias", causal.repeat(self.math.groups, 1), persistent=False)  # [G*P, P]
        self.input_names = [layer_input(start)]
        self.output_names = [hidden_name(stop)] + [n for i in range(start, stop) for n in present_names(i)]

    def forward(self, hidden: torch.Tensor):
        """hidden [1, P, D] -> (hidden [1, P, D], key_i, value_i [1, KV, L, hd] ...)."""
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


def build_llm_stages(lm: LanguageModel, groups: list[tuple[int, int]], prefill: bool) -> list[Stage]:
    stage = PrefillStage if prefill else DecodeStage
    return [*(stage(lm, a, b) for a, b in groups), HeadStage(lm, prefill)]


def run_stages(stages: list[Stage], feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Chain stages by name (the PyTorch reference of a chunked run); returns every named tensor."""
    env = dict(feeds)
    with torch.no_grad():
        for stage in stages:
            out = stage(*(env[n] for n in stage.input_names))
            env.update(zip(stage.output_names, out if isinstance(out, tuple) else (out,), strict=True))
    return env


def example_feeds(lm: LanguageModel, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Realistic example inputs: (prefill feeds, decode feeds from the prefill's caches at position P)."""
    d = lm.dims
    embeds = torch.randn(1, d.prefill_len, d.hidden, generator=torch.Generator().manual_seed(seed)) * 0.02
    prefill = {INPUTS_EMBEDS: embeds, LAST_INDEX: torch.tensor([d.prefill_len - 1])}
    env = run_stages(build_llm_stages(lm, block_groups(d.layers, 1), prefill=True), prefill)
    decode = {INPUTS_EMBEDS: embeds[:, -1:].clone(), POSITION: torch.tensor([min(d.prefill_len, d.max_len - 1)])}
    for i in range(d.layers):
        decode.update(zip(past_names(i), (env[n] for n in present_names(i)), strict=True))
    return prefill, decode


def llm_chunk_exports(lm: LanguageModel, groups: list[tuple[int, int]]) -> dict[str, list[ChunkExport]]:
    """{'prefill': [...], 'decode': [...]}: one ChunkExport per stage with example inputs from a reference run."""
    prefill_feeds, decode_feeds = example_feeds(lm)
    out: dict[str, list[ChunkExport]] = {}
    for kind, feeds in (("prefill", prefill_feeds), ("decode", decode_feeds)):
        env, chunks = dict(feeds), []
        for stage in build_llm_stages(lm, groups, prefill=kind == "prefill"):
            example = tuple(env[n].contiguous() for n in stage.input_names)
            name = f"{kind}_head" if isinstance(stage, HeadStage) else f"{kind}_{stage.start:02d}-{stage.stop - 1:02d}"
            chunks.append(ChunkExport(name, stage.eval(), example))
            env.update(run_stages([stage], dict(zip(stage.input_names, example, strict=True))))
        out[kind] = chunks
    return out


def embedding_dtype_for(dims: LlmDims) -> str:
    """float16 on disk when the [V, D] table is over 256 MB in float32 (Qwen2-0.5B: 151936 x 896 = 545 MB),
    float32 otherwise. The lm_head stays float32 inside the head chunks; the runtime widens looked-up rows."""
    return "float16" if dims.vocab * dims.hidden * 4 > EMBEDDING_FP16_BYTES else "float32"


def write_llm(
    lm: LanguageModel,
    root: Path,
    target: str,
    groups: int,
    fp16: bool = False,
    graphs: tuple[str, ...] = ("prefill", "decode"),
    first_index: int = 0,
    step=lambda name: None,
) -> tuple[list[dict], dict[str, list[str]], list[dict], dict]:
    """Export the prefill / decode chunks and the embedding table into ``root``.

    Returns (chunk entries, pipelines {graph: chunk names}, top-level file entries, ``llm`` section).
    ``groups``: layer groups per graph (each graph has ``groups`` layer chunks + a head chunk).
    """
    layout = block_groups(lm.dims.layers, groups)
    embedding_dtype = embedding_dtype_for(lm.dims)
    table = root / EMBEDDING_FILE
    np.save(table, lm.embedding_table().astype(embedding_dtype))
    section: dict = {
        "architecture": lm.architecture,
        "model_type": lm.model_type,
        **lm.dims.to_dict(),
        "embedding_dtype": embedding_dtype,
        "cache": "per layer [1, num_kv_heads, max_length, head_dim]; decode reads past_*_XX, writes present_*_XX",
    }
    entries, pipelines, index = [], {}, first_index
    exports = llm_chunk_exports(lm, layout)
    total = sum(len(exports[g]) for g in graphs)
    for kind in graphs:
        pipelines[kind] = []
        for chunk in exports[kind]:
            step(f"export {target} language-model chunk {index - first_index + 1}/{total}: {chunk.name}")
            path = root / f"{index:02d}-{chunk.name}{SUFFIX[target]}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                files = write_chunk(target, chunk, path, fp16, chunked=True)
            inputs, outputs = io_spec(chunk, target)
            entry = {"name": chunk.name, "files": [file_entry(root, f, role) for f, role in files]}
            entry.update(inputs=inputs, outputs=outputs)
            if target == "onnx":
                entry["optimized"] = "ort-extended"
            entries.append(entry)
            pipelines[kind].append(chunk.name)
            index += 1
    return entries, pipelines, [file_entry(root, table, "embedding")], section


def export_llm(
    model: nn.Module,
    out: Path,
    target: str,
    max_len: int,
    prefill_len: int,
    groups: int = 1,
    fp16: bool = False,
    graphs: tuple[str, ...] = ("prefill", "decode"),
) -> dict:
    """A language-model-only artifact (``kind: language-model``) of a model built in code (seeded random
    weights: tests, tiny presets) in ``out``: chunks, embedding table, manifest.

    Returns the manifest. The VLM export (``edgetrim.export.vlm``) writes the same chunks beside vision ones.
    """
    lm = LanguageModel(model.eval(), max_len, prefill_len).eval()
    with staging(Path(out)) as tmp:
        chunks, pipelines, files, section = write_llm(lm, tmp, target, groups, fp16, graphs)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "edgetrim_version": VERSION,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "kind": "language-model",
            "target": target,
            "precision": "fp16" if fp16 else "fp32",
            "source": {
                "kind": "preset",
                "name": lm.architecture,
                "architecture": lm.architecture,
                "random_weights": True,
                "config": lm.dims.to_dict(),
                "has_projector": False,
                "token_dim": lm.dims.hidden,
            },
            "llm": section,
            "chunks": chunks,
            "pipelines": pipelines,
            "files": files,
        }
        write_json(tmp / MANIFEST, manifest)
    return manifest
