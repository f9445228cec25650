"""Greedy generation with exported prefill / decode chunks, numpy only (no torch).

A language-model or vlm artifact (``edgetrim.export.llm`` / ``edgetrim.export.vlm``) has a
``prefill`` and a ``decode`` pipeline and a top-level ``embedding`` file, the token-embedding
table ``[V, D]`` (float32, float16, or int8 with per-row scales: ``edgetrim.runtime.embedding``;
looked-up rows are widened to float32). Text is embedded from that table, the K visual tokens
``[K, D]`` replace the image placeholder, the prompt is right-padded to the smallest exported
prefill length that holds it (P, or a shorter prefill bucket: the ``prefill_<n>`` functions of the
same chunks, over the same weights as ``decode``), and the caches ``[1, KV, L, hd]`` go from each
step's ``present_*`` outputs to the next step's ``past_*`` inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetrim.runtime import contract
from edgetrim.runtime.backends import Providers
from edgetrim.runtime.chunks import ChunkLoader
from edgetrim.runtime.contract import INPUTS_EMBEDS, LAST_INDEX, LOGITS, POSITION, past_names, present_names
from edgetrim.runtime.embedding import EmbeddingTable
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import Artifact, open_artifact

KINDS = (contract.LANGUAGE_MODEL, contract.VLM)


@dataclass
class Generation:
    """Greedy output: new token ids, first-token logits [V], timings."""

    tokens: list[int]
    first_logits: np.ndarray
    prompt_tokens: int
    prefill_length: int  # the exported prefill length that ran (the smallest holding the prompt)
    ttft_s: float  # embedding + prefill + first token
    decode_s: float  # the decode steps after the first token
    step_s: list[float] = field(default_factory=list)

    @property
    def decode_tokens_per_s(self) -> float:
        return len(self.step_s) / self.decode_s if self.decode_s > 0 else 0.0


def splice_visual(
    ids: list[int], table: EmbeddingTable, visual: np.ndarray | None, image_token: int | None
) -> np.ndarray:
    """Prompt ids -> embeddings [n, D]; the one ``image_token`` becomes the K rows of ``visual`` [K, D].

    Ids that already hold K placeholders (a processor that expanded them) are replaced in order.
    """
    embeds = table.rows(ids)
    if visual is None:
        return embeds
    visual = np.asarray(visual, dtype=np.float32).reshape(-1, table.width)
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


def check_counts(n: int, max_new_tokens: int) -> None:
    """A generation needs at least one prompt token and one new token."""
    if n < 1 or max_new_tokens < 1:
        raise UserError(f"nothing to generate from {n} prompt tokens and {max_new_tokens} new tokens: pass both >= 1")


def decode_greedily(
    first: int,
    step: Callable[[int, int], np.ndarray],
    n: int,
    max_new_tokens: int,
    eos_tokens: Collection[int],
    on_token: Callable[[int], None] | None,
) -> tuple[list[int], list[float]]:
    """Greedy tokens after a prompt of ``n``: ``first`` (from the prefill), then ``step(token, position) ->
    logits [V]`` for each next one until ``max_new_tokens`` or an ``eos_tokens``; (tokens, seconds per step)."""
    tokens: list[int] = [first]
    if on_token:
        on_token(first)
    steps: list[float] = []
    while len(tokens) < max_new_tokens and tokens[-1] not in eos_tokens:
        s = time.perf_counter()
        tokens.append(int(np.argmax(step(tokens[-1], n + len(tokens) - 1))))
        steps.append(time.perf_counter() - s)
        if on_token:
            on_token(tokens[-1])
    return tokens, steps


class LanguageModelRunner:
    """The ``prefill`` and ``decode`` pipelines of a verified artifact; ``generate`` runs greedy decoding.

    ``memory_budget_mb``: each pipeline keeps what fits resident and streams the rest (``ChunkLoader``).
    """

    def __init__(
        self, artifact: Artifact, memory_budget_mb: float | None = None, providers: Providers | None = None
    ) -> None:
        if artifact.kind not in KINDS:
            raise UserError(f"{artifact.root} is a {artifact.kind} artifact: this takes {' or '.join(KINDS)} artifacts")
        self.artifact, section = artifact, artifact.manifest["llm"]
        if section.get("kv_cache") == contract.KV_STATE:
            raise UserError(
                f"{artifact.root} keeps its KV cache as Core ML state (iOS 18): run it in the iOS app, or export "
                "with `kv_cache` io to run it here"
            )
        self.prefill_len, self.max_len = section["prefill_length"], section["max_length"]
        self.prefill_lengths = sorted(section.get("prefill_lengths", [self.prefill_len]))  # before 0.4: P alone
        self.layers = section["num_layers"]
        self.table = EmbeddingTable.open(artifact)  # [V, D], memory-mapped
        self.presents = [n for i in range(self.layers) for n in present_names(i)]
        self.pasts = [n for i in range(self.layers) for n in past_names(i)]
        self.prefill = ChunkLoader(
            artifact,
            memory_budget_mb,
            providers=providers,
            pipeline=contract.PREFILL,
            inputs=[INPUTS_EMBEDS, LAST_INDEX],
            outputs=[LOGITS, *self.presents],
            function=contract.prefill_function(self.prefill_len),
        )
        self.decode = ChunkLoader(
            artifact,
            memory_budget_mb,
            providers=providers,
            pipeline=contract.DECODE,
            inputs=[INPUTS_EMBEDS, POSITION, *self.pasts],
            outputs=[LOGITS, *self.presents],
            function=contract.DECODE,
        )

    @classmethod
    def from_folder(cls, root: str | Path, memory_budget_mb: float | None = None) -> LanguageModelRunner:
        """Open (and sha256-verify) a language-model or vlm artifact folder."""
        return cls(open_artifact(root, KINDS), memory_budget_mb)

    def warm(self, prompt_tokens: int | None = None) -> None:
        """Load the resident chunks now (otherwise they load on first use): decode, and prefill at the
        length a prompt of ``prompt_tokens`` runs (default, and for a prompt ``generate`` will refuse: P)."""
        length = self.prefill_length_for(min(prompt_tokens or self.prefill_len, self.prefill_len))
        self.prefill.warm(contract.prefill_function(length))
        self.decode.warm()

    def close(self) -> None:
        self.prefill.close()
        self.decode.close()

    def active_providers(self) -> list[str]:
        """The execution providers the runtime chose for the resident prefill and decode chunks."""
        chosen = self.prefill.active_providers()
        return chosen + [p for p in self.decode.active_providers() if p not in chosen]

    def row(self, token: int) -> np.ndarray:
        """[1, 1, D] float32 embedding of one token (a writable copy)."""
        return self.table.rows([token])[None]

    def embed(self, ids: list[int], visual: np.ndarray | None = None, image_token: int | None = None) -> np.ndarray:
        """[n, D] prompt embeddings with the visual tokens spliced in."""
        return splice_visual(ids, self.table, visual, image_token)

    def prefill_length_for(self, n: int) -> int:
        """The smallest exported prefill length that holds ``n`` prompt tokens (n <= P)."""
        return next(length for length in self.prefill_lengths if length >= n)

    def generate(
        self,
        embeds: np.ndarray,
        max_new_tokens: int,
        eos_tokens: Collection[int] = (),
        on_token: Callable[[int], None] | None = None,
    ) -> Generation:
        """Greedy: prefill ``embeds`` [n, D] (n <= P), then decode until ``max_new_tokens`` or one of ``eos_tokens``."""
        t0 = time.perf_counter()
        n = embeds.shape[0]
        if n > self.prefill_len:
            raise UserError(
                f"the prompt is {n} tokens (visual tokens included), longer than the exported prefill length "
                f"{self.prefill_len}: shorten the prompt or re-export with a longer prefill"
            )
        check_counts(n, max_new_tokens)
        if n + max_new_tokens - 1 > self.max_len:
            raise UserError(
                f"{n} prompt tokens + {max_new_tokens} new tokens exceed the KV cache of {self.max_len}: "
                f"pass `max_new_tokens` {self.max_len - n + 1} or less"
            )
        length = self.prefill_length_for(n)
        padded = np.zeros((1, length, embeds.shape[1]), np.float32)
        padded[0, :n] = embeds
        feeds = {INPUTS_EMBEDS: padded, LAST_INDEX: np.array([n - 1], np.int64)}
        function = contract.prefill_function(length)
        self.prefill.retain(function)  # one prefill length resident at a time: each holds its own packed weights
        env = self.prefill.run(feeds, function=function)
        logits = env[LOGITS][0]
        first = int(np.argmax(logits))
        ttft = time.perf_counter() - t0
        caches = {past: env[present] for past, present in zip(self.pasts, self.presents, strict=True)}

        def step(token: int, position: int) -> np.ndarray:
            feeds = {INPUTS_EMBEDS: self.row(token), POSITION: np.array([position], np.int64)}
            out = self.decode.run({**feeds, **caches})
            caches.update((past, out[present]) for past, present in zip(self.pasts, self.presents, strict=True))
            return out[LOGITS][0]

        tokens, steps = decode_greedily(first, step, n, max_new_tokens, eos_tokens, on_token)
        return Generation(tokens, logits, n, length, ttft, sum(steps), steps)


def load_tokenizer(path: str | Path):
    """``tokenizers.Tokenizer`` from a tokenizer.json, or a folder holding one (torch-free)."""
    path = Path(path)
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"{path} is missing: the artifact needs the model's tokenizer.json, re-export it")
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))
