"""onnxruntime-genai's model builder as the anchor in ``edgetrim bench --genai``: its ONNX language model run
beside ours, torch-free, with plain ONNX Runtime sessions.

The builder (``python -m onnxruntime_genai.models.builder -p int4|fp32 -e cpu --extra_options
exclude_embeds=true``, see ``edgetrim.export.genai``) writes ``model.onnx`` (+ ``.onnx.data``) and
``genai_config.json``. Built with ``exclude_embeds`` the graph takes ``inputs_embeds`` [1, s, D] (so HiRED's
visual tokens go in as embeddings), ``attention_mask`` [1, past + s] int64, ``position_ids`` [1, s] when the
config lists it, and ``past_key_values.%d.key/value`` [1, KV, past, hd] growing by s per call (the
``present.%d.*`` outputs); it returns ``logits`` [1, s, V]. onnxruntime-genai's Generator cannot take user
embeddings for such a model, so ``GenaiLanguageModel`` runs the graph itself: greedy decoding from the same
prompt embeddings as ``LanguageModelRunner`` (visual tokens spliced in; new tokens embedded from the
artifact's table), with the same ``Generation`` out. The prompt is not padded (the graph is dynamic).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgetrim.runtime.backends import session_options
from edgetrim.runtime.embedding import EmbeddingTable
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.llm import Generation, check_counts, decode_greedily
from edgetrim.runtime.vlm import VlmPipeline

ENGINE = "onnxruntime-genai"  # a bench row's ``engine``; ours are ``edgetrim``
EDGETRIM = "edgetrim"
PRECISIONS = {"int4": "int4", "fp32": "none"}  # builder precision -> the matching edgetrim ``quantize`` mode
CONFIG = "genai_config.json"
ENTRY = "edgetrim_genai.json"  # written by edgetrim.export.genai beside the builder's files: how it was built
GOAL_DECODE, GOAL_PREFILL = 1.0, 0.6  # ours / genai at 20% int4: decode tokens/s >= 1.0x, prefill ms <= 0.6x
RATIOS = {  # ours / genai, per name: the row key compared
    "decode": "decode_tokens_per_s",
    "prefill": "prefill_ms",
    "ttft": "ttft_ms",
    "peak_rss": "peak_rss_mb",
    "lm_bytes": "lm_bytes",
}
DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class GenaiVariant(NamedTuple):
    """A bench variant: the builder's model in ``model`` (built at ``precision``) fed the image, prompt and table
    of our ``artifact``."""

    artifact: Path
    model: Path
    precision: str


def parse_precisions(text: str) -> list[str]:
    """``int4,fp32`` -> ["int4", "fp32"]: the builder precisions to measure."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or any(m not in PRECISIONS for m in modes) or len(set(modes)) != len(modes):
        raise UserError(
            f"`genai` {text!r}: pass builder precisions from {', '.join(PRECISIONS)}, e.g. int4 or int4,fp32"
        )
    return modes


def model_bytes(folder: Path) -> int:
    """Bytes of the builder's ONNX graph and weights (its config and tokenizer files not counted)."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith((".onnx", ".onnx.data")))


class GenaiLanguageModel:
    """The builder's decoder graph (``exclude_embeds``) in one ONNX Runtime session, greedy ``generate`` as
    ``LanguageModelRunner``'s; ``table`` embeds the new tokens (the artifact's [V, D] table)."""

    def __init__(self, folder: str | Path, table: EmbeddingTable) -> None:
        import onnxruntime as ort

        self.folder, self.table = Path(folder), table
        if not (self.folder / CONFIG).is_file() or not (self.folder / ENTRY).is_file():
            raise UserError(
                f"{self.folder} holds no {CONFIG} and {ENTRY}: pass a model built by `edgetrim bench --genai`"
            )
        self.entry = json.loads((self.folder / ENTRY).read_text())
        model = json.loads((self.folder / CONFIG).read_text())["model"]
        dec = model["decoder"]
        names, outs = dec["inputs"], dec["outputs"]
        if "inputs_embeds" not in names:
            raise UserError(f"{self.folder} was built without exclude_embeds (it takes token ids): rebuild it")
        self.context_length = model["context_length"]
        self.kv_heads, self.head_size = dec["num_key_value_heads"], dec["head_size"]
        layers = range(dec["num_hidden_layers"])
        self.pasts = [n for i in layers for n in (names["past_key_names"] % i, names["past_value_names"] % i)]
        self.presents = [n for i in layers for n in (outs["present_key_names"] % i, outs["present_value_names"] % i)]
        self.embeds, self.logits = names["inputs_embeds"], outs["logits"]
        self.session = ort.InferenceSession(  # the options of our sessions, so only the graphs differ
            str(self.folder / dec["filename"]), session_options(), providers=["CPUExecutionProvider"]
        )
        inputs = {i.name: i.type for i in self.session.get_inputs()}
        self.mask = names.get("attention_mask") if names.get("attention_mask") in inputs else None
        self.positions = names.get("position_ids") if names.get("position_ids") in inputs else None
        self.io_dtype, self.kv_dtype = DTYPES[inputs[self.embeds]], DTYPES[inputs[self.pasts[0]]]

    def warm(self, prompt_tokens: int | None = None) -> None:
        """Nothing to do: the session is created (and its graph optimized) in ``__init__``, for any length."""

    def close(self) -> None:
        self.session = None

    def step(self, embeds: np.ndarray, past: int, caches: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run ``embeds`` [1, s, D] after ``past`` cached positions: [logits [1, s, V], *presents]."""
        s = embeds.shape[1]
        feeds = {self.embeds: embeds.astype(self.io_dtype, copy=False), **caches}
        if self.mask:
            feeds[self.mask] = np.ones((1, past + s), np.int64)
        if self.positions:
            feeds[self.positions] = np.arange(past, past + s, dtype=np.int64)[None]
        return self.session.run([self.logits, *self.presents], feeds)

    def generate(
        self,
        embeds: np.ndarray,
        max_new_tokens: int,
        eos_tokens: Collection[int] = (),
        on_token: Callable[[int], None] | None = None,
    ) -> Generation:
        """Greedy: prefill ``embeds`` [n, D] (unpadded), then decode until ``max_new_tokens`` or an ``eos_tokens``."""
        t0 = time.perf_counter()
        n = embeds.shape[0]
        check_counts(n, max_new_tokens)
        if n + max_new_tokens - 1 > self.context_length:
            raise UserError(
                f"{n} prompt tokens + {max_new_tokens} new tokens exceed the model's context of {self.context_length}"
            )
        empty = np.zeros((1, self.kv_heads, 0, self.head_size), self.kv_dtype)
        logits, *presents = self.step(embeds[None], 0, dict.fromkeys(self.pasts, empty))
        first = logits[0, -1].astype(np.float32)
        ttft = time.perf_counter() - t0
        caches = dict(zip(self.pasts, presents, strict=True))

        def next_logits(token: int, position: int) -> np.ndarray:
            logits, *presents = self.step(self.table.rows([token])[None], position, caches)
            caches.update(zip(self.pasts, presents, strict=True))
            return logits[0, -1]

        tokens, steps = decode_greedily(int(np.argmax(first)), next_logits, n, max_new_tokens, eos_tokens, on_token)
        return Generation(tokens, first, n, n, ttft, sum(steps), steps)

    def facts(self) -> dict:
        """What a bench row says about this model: engine, builder precision and version, bytes, context."""
        precision = self.entry["precision"]
        return {
            "engine": ENGINE,
            "genai_precision": precision,
            "quantize": PRECISIONS[precision],
            "onnxruntime_genai": self.entry["onnxruntime_genai"],
            "genai_model": str(self.folder),
            "lm_bytes": model_bytes(self.folder),
            "max_length": self.context_length,
        }


class GenaiVlmPipeline(VlmPipeline):
    """A vlm artifact's vision chunks, tokenizer, template and embedding table, with the builder's language model
    in place of the artifact's prefill / decode chunks (which are never loaded)."""

    def __init__(self, root: str | Path, model: str | Path) -> None:
        super().__init__(root, language_model=lambda artifact: GenaiLanguageModel(model, EmbeddingTable.open(artifact)))


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def compare(rows: list[dict], label: Callable[[dict], str]) -> dict:
    """Each onnxruntime-genai row against our row on the same artifact (same image, prompt, visual tokens):
    ``vs_ours`` (its ``label``), ours / genai for decode tokens/s, prefill ms, TTFT, peak RSS and language-model
    bytes, and whether the greedy tokens agree (written into the genai row). Returns the goals at 20% with both
    sides int4 (empty otherwise)."""
    goals: dict[str, bool] = {}
    for g in (r for r in rows if r["engine"] == ENGINE):
        ours = next(r for r in rows if r["engine"] == EDGETRIM and r["artifact"] == g["artifact"])
        g["vs_ours"] = label(ours)
        for name, key in RATIOS.items():
            g[f"ours_over_genai_{name}"] = ours[key] / g[key]
        g["greedy_agree"] = ours["tokens"] == g["tokens"]
        g["greedy_common_prefix"] = common_prefix(ours["tokens"], g["tokens"])
        at20 = g["method"] == "hired" and float(g["requested_budget"]) == 0.2
        if at20 and g["genai_precision"] == "int4" and ours["quantize"] == "int4":
            goals[f"decode_int4_ge_{GOAL_DECODE}x_genai_int4"] = g["ours_over_genai_decode"] >= GOAL_DECODE
            goals[f"prefill_20_int4_le_{GOAL_PREFILL}x_genai_int4"] = g["ours_over_genai_prefill"] <= GOAL_PREFILL
    return goals


def markdown(rows: list[dict], label: Callable[[dict], str]) -> list[str]:
    """The markdown section comparing each genai row with our row on the same artifact (none: no lines)."""
    genai = [r for r in rows if r["engine"] == ENGINE]
    if not genai:
        return []
    version = genai[0]["onnxruntime_genai"]
    lines = [
        "",
        f"## vs onnxruntime-genai {version} (model builder, `-e cpu`, `exclude_embeds=true`; plain ONNX Runtime "
        "sessions fed the same prompt embeddings, greedy)",
        "",
        "| genai variant | vs ours | genai LM MB | ours LM MB | prefill ms | TTFT ms | decode tok/s | peak RSS MB "
        "| ours/genai decode | ours/genai prefill | greedy tokens agree |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in genai:
        ours = next(r for r in rows if r["engine"] == EDGETRIM and r["artifact"] == g["artifact"])
        agree = "yes" if g["greedy_agree"] else f"first {g['greedy_common_prefix']} of {len(g['tokens'])}"
        lines.append(
            f"| {label(g)} | {g['vs_ours']} | {g['lm_bytes'] / 2**20:.0f} | {ours['lm_bytes'] / 2**20:.0f} | "
            f"{g['prefill_ms']:.0f} | {g['ttft_ms']:.0f} | {g['decode_tokens_per_s']:.1f} | {g['peak_rss_mb']:.0f} | "
            f"{g['ours_over_genai_decode']:.2f}x | {g['ours_over_genai_prefill']:.2f}x | {agree} |"
        )
    return lines
