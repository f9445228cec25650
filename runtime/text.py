"""Caption text -> T5 caption embeddings on a ``text-encoder`` artifact (numpy + tokenizers + the backend).

The artifact's ``tokenizer.json`` tokenizes the text (``tokenizers`` library); ids are truncated to
the exported length L and zero-padded with a mask; the chunked encoder returns ``[1, L, D]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetrim.runtime import contract
from edgetrim.runtime.chunks import ChunkLoader
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import Artifact, open_artifact
from edgetrim.runtime.video import Caption, fit_caption


def tokenize(tokenizer_path: Path, text: str, length: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """-> input_ids int64 [1, L], attention_mask float32 [1, L]."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise UserError("encoding text needs the tokenizers package: pip install tokenizers") from None
    ids = Tokenizer.from_file(str(tokenizer_path)).encode(text).ids[:length]
    if not ids:
        raise UserError("`prompt_text` gives no tokens: pass a non-empty caption")
    if max(ids) >= vocab:
        raise UserError(f"the tokenizer gives id {max(ids)} beyond the encoder's {vocab} embeddings: re-export")
    input_ids = np.zeros((1, length), np.int64)
    input_ids[0, : len(ids)] = ids
    mask = np.zeros((1, length), np.float32)
    mask[0, : len(ids)] = 1.0
    return input_ids, mask


def encode_text(root: str | Path, text: str, memory_budget_mb: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> (caption embeddings [L, D], mask [L])."""
    artifact = open_artifact(root, (contract.TEXT_ENCODER,))
    info = artifact.manifest["text_encoder"]
    ids, mask = tokenize(artifact.data_file(info["tokenizer"]), text, info["max_length"], info["vocab_size"])
    int_type = np.int32 if artifact.target == contract.COREML else np.int64
    feeds = {contract.INPUT_IDS: ids.astype(int_type), contract.ATTENTION_MASK: mask}
    with ChunkLoader(artifact, memory_budget_mb, pipeline=contract.TEXT) as loader:
        embeds = loader.run(feeds)[contract.CAPTION_EMBEDS]
    return embeds[0], mask[0]


def run(root: Path, text: str | None, out: Path | None, memory_budget_mb: float | None = None) -> dict:
    """Encode ``text``; writes ``caption.npz`` (caption [L, D], mask [L]) for a video denoiser's `caption`."""
    if not text:
        raise UserError(f"{root} is a text encoder: pass `prompt_text` TEXT")
    embeds, mask = encode_text(root, text, memory_budget_mb)
    out = out or Path(root) / "run"
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "caption.npz", caption=embeds, mask=mask)
    return {
        "tokens": int(mask.sum()),
        "length": len(mask),
        "shape": list(embeds.shape),
        "written": [str(out / "caption.npz")],
    }


def check_width(encoder: Artifact, channels: int) -> None:
    """Refuse a text encoder whose embeddings are not the denoiser's ``channels`` wide (before anything runs)."""
    width = encoder.manifest["text_encoder"]["hidden_size"]
    if width != channels:
        raise UserError(
            f"the text encoder {encoder.root} gives {width}-wide embeddings, the denoiser takes {channels}: "
            "pair the denoiser with its own text encoder"
        )


def encode_prompt(root: Path, text: str | None, length: int, channels: int, memory_budget_mb: float | None) -> Caption:
    """``--text-encoder DIR --prompt-text TEXT`` -> a Caption fitted to the denoiser's [L, C_cap]."""
    if not text:
        raise UserError("`text_encoder` needs `prompt_text`: pass the caption text")
    check_width(open_artifact(root, (contract.TEXT_ENCODER,)), channels)
    embeds, mask = encode_text(root, text, memory_budget_mb)
    n = min(len(embeds), length)  # a longer encoder export is truncated to the denoiser's caption length
    return fit_caption(embeds[:n], mask[:n], length, channels, str(root))
