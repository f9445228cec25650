"""Greedy generation with exported prefill / decode chunks, numpy only (no torch).

The language-model section (written by ``edgetrim.export.llm.export_llm``) lists the prefill
chunks, the decode chunks and the token-embedding table ``[V, D]``. Text is embedded from that
table, the K visual tokens ``[K, D]`` replace the image placeholder, the prompt is right-padded
to the static prefill length P, and the caches ``[1, KV, L, hd]`` go from each step's
``present_*`` outputs to the next step's ``past_*`` inputs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetrim.runtime.backends import Backend, open_backend
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import digest_path

SECTION_FILE = "llm.json"
KV = ("key", "value")


@dataclass
class Generation:
    """Greedy output: new token ids, first-token logits [V], timings."""

    tokens: list[int]
    first_logits: np.ndarray
    prompt_tokens: int
    ttft_s: float  # embedding + prefill + first token
    decode_s: float  # the decode steps after the first token
    step_s: list[float] = field(default_factory=list)

    @property
    def decode_tokens_per_s(self) -> float:
        return len(self.step_s) / self.decode_s if self.decode_s > 0 else 0.0


def splice_visual(ids: list[int], table: np.ndarray, visual: np.ndarray | None, image_token: int | None) -> np.ndarray:
    """Prompt ids -> embeddings [n, D]; the one ``image_token`` becomes the K rows of ``visual`` [K, D].

    Ids that already hold K placeholders (a processor that expanded them) are replaced in order.
    """
    embeds = np.asarray(table[np.asarray(ids, dtype=np.int64)], dtype=np.float32)
    if visual is None:
        return embeds
    visual = np.asarray(visual, dtype=np.float32).reshape(-1, table.shape[1])
    slots = [i for i, t in enumerate(ids) if t == image_token]
    if len(slots) == len(visual) and slots == list(range(slots[0], slots[0] + len(slots))):
        embeds[slots] = visual
        return embeds
    if len(slots) != 1:
        raise UserError(
            f"the prompt has {len(slots)} image placeholders (id {image_token}); it needs exactly one "
            f"(or {len(visual)}, one per visual token): put the image token once in the prompt template"
        )
    return np.concatenate([embeds[: slots[0]], visual, embeds[slots[0] + 1 :]])


class LanguageModelRunner:
    """Opens the prefill and decode chunks of a language-model section; ``generate`` runs greedy decoding."""

    def __init__(self, root: Path, section: dict, target: str, providers: list[str] | None = None) -> None:
        self.root, self.section, self.target = Path(root), section, target
        self.prefill_len, self.max_len = section["prefill_length"], section["max_length"]
        self.layers = section["num_layers"]
        decode = section.get("decode", [])  # absent in a prefill-only export
        self._verify([section["embedding"], *(f for c in section["prefill"] + decode for f in c["files"])])
        self.table = np.load(self.root / section["embedding"]["path"], mmap_mode="r")
        self.prefill = [self._open(c, providers) for c in section["prefill"]]
        self.decode = [self._open(c, providers) for c in decode]

    @classmethod
    def from_folder(cls, root: str | Path, providers: list[str] | None = None) -> LanguageModelRunner:
        """A folder holding ``llm.json`` ({"target": ..., "llm": section}) beside the chunk files."""
        path = Path(root) / SECTION_FILE
        if not path.is_file():
            raise UserError(f"{root} has no {SECTION_FILE}: pass a folder written by the language-model export")
        data = json.loads(path.read_text())
        return cls(Path(root), data["llm"], data["target"], providers)

    def _verify(self, entries: list[dict]) -> None:
        for entry in entries:
            path = self.root / entry["path"]
            if not path.exists():
                raise UserError(f"{path} is missing: re-export the artifact")
            size, sha = digest_path(path)
            if (size, sha) != (entry["bytes"], entry["sha256"]):
                raise UserError(f"{path} does not match its sha256 / size in the manifest: re-export the artifact")

    def _open(self, chunk: dict, providers: list[str] | None) -> tuple[dict, Backend]:
        program = next(f["path"] for f in chunk["files"] if f["role"] == "program")
        backend = open_backend(
            self.target,
            self.root / program,
            [i["name"] for i in chunk["inputs"]],
            [o["name"] for o in chunk["outputs"]],
            providers,
            optimized=chunk.get("optimized") == "ort-extended",
        )
        return chunk, backend

    @staticmethod
    def _run(chunks: list[tuple[dict, Backend]], env: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for chunk, backend in chunks:
            env.update(backend.run({spec["name"]: env[spec["name"]] for spec in chunk["inputs"]}))
        return env

    def embed(self, ids: list[int], visual: np.ndarray | None = None, image_token: int | None = None) -> np.ndarray:
        """[n, D] prompt embeddings with the visual tokens spliced in."""
        return splice_visual(ids, self.table, visual, image_token)

    def generate(
        self,
        embeds: np.ndarray,
        max_new_tokens: int,
        eos_token: int | None = None,
        on_token: Callable[[int], None] | None = None,
    ) -> Generation:
        """Greedy: prefill ``embeds`` [n, D] (n <= P), then decode until ``max_new_tokens`` or ``eos_token``."""
        t0 = time.perf_counter()
        n = embeds.shape[0]
        if n > self.prefill_len:
            raise UserError(
                f"the prompt is {n} tokens (visual tokens included), longer than the exported prefill length "
                f"{self.prefill_len}: shorten the prompt or re-export with a longer prefill"
            )
        if n < 1 or max_new_tokens < 1:
            raise UserError(
                f"nothing to generate from {n} prompt tokens and {max_new_tokens} new tokens: pass both >= 1"
            )
        if n + max_new_tokens - 1 > self.max_len:
            raise UserError(
                f"{n} prompt tokens + {max_new_tokens} new tokens exceed the KV cache of {self.max_len}: "
                f"pass --max-new-tokens {self.max_len - n + 1} or less"
            )
        if max_new_tokens > 1 and not self.decode:
            raise UserError("this artifact has no decode graph (prefill-only export): pass --max-new-tokens 1")
        padded = np.zeros((1, self.prefill_len, embeds.shape[1]), np.float32)
        padded[0, :n] = embeds
        env = self._run(self.prefill, {"inputs_embeds": padded, "last_index": np.array([n - 1], np.int64)})
        logits = env["logits"][0]
        tokens = [int(np.argmax(logits))]
        ttft = time.perf_counter() - t0
        if on_token:
            on_token(tokens[0])
        caches = {f"past_{kind}_{i:02d}": env[f"present_{kind}_{i:02d}"] for i in range(self.layers) for kind in KV}
        steps: list[float] = []
        while len(tokens) < max_new_tokens and tokens[-1] != eos_token:
            s = time.perf_counter()
            feeds = {
                "inputs_embeds": np.array(self.table[tokens[-1]], np.float32)[None, None],  # a copy: writable
                "position": np.array([n + len(tokens) - 1], np.int64),
                **caches,
            }
            env = self._run(self.decode, feeds)
            caches = {name: env["present" + name[4:]] for name in caches}
            tokens.append(int(np.argmax(env["logits"][0])))
            steps.append(time.perf_counter() - s)
            if on_token:
                on_token(tokens[-1])
        return Generation(tokens, logits, n, ttft, sum(steps), steps)


def load_tokenizer(folder: str | Path):
    """``tokenizers.Tokenizer`` from ``folder/tokenizer.json`` (torch-free)."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{path} is missing: the artifact needs the model's tokenizer.json, re-export it")
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))
