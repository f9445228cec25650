"""A whole VLM artifact, torch-free: image -> HiRED visual tokens -> prompt splice -> prefill -> greedy decode.

The manifest (``kind: vlm``) has three pipelines: ``vision`` (pixel_values [1, P, 3, S, S] ->
tokens [1, K, D] in the LLM's embedding space), ``prefill`` and ``decode`` (see
``edgetrim.runtime.llm``), a tokenizer.json and the token-embedding table as top-level files, and
the prompt template in ``llm.template``: ``<image>`` marks where the K visual tokens go,
``{prompt}`` the user's text. Text from presets (random weights) is meaningless.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgetrim.runtime import contract
from edgetrim.runtime.backends import Providers
from edgetrim.runtime.chunks import ChunkLoader
from edgetrim.runtime.contract import IMAGE_TOKEN as IMAGE_PLACEHOLDER
from edgetrim.runtime.contract import PROMPT_FIELD
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.llm import Generation, LanguageModelRunner, load_tokenizer, splice_visual
from edgetrim.runtime.manifest import Artifact, open_artifact
from edgetrim.runtime.preprocess import load_image, preprocess


def check_template(template: str) -> None:
    """One ``<image>`` and one ``{prompt}``: where the visual tokens and the user's text go."""
    if template.count(IMAGE_PLACEHOLDER) != 1 or template.count(PROMPT_FIELD) != 1:
        raise UserError(
            f"the prompt template {template!r} must contain {IMAGE_PLACEHOLDER} and {PROMPT_FIELD} exactly once: "
            "e.g. `template` 'USER: <image>\\n{prompt} ASSISTANT:'"
        )


def prompt_ids(tokenizer, template: str, prompt: str, image_token: int) -> list[int]:
    """Token ids of the filled template with one ``image_token`` at the placeholder.

    The text before the placeholder is encoded with the tokenizer's special tokens (e.g. BOS),
    the text after without, so the placeholder never merges with its neighbours.
    """
    before, after = template.replace(PROMPT_FIELD, prompt).split(IMAGE_PLACEHOLDER)
    head = tokenizer.encode(before, add_special_tokens=True).ids
    return [*head, image_token, *tokenizer.encode(after, add_special_tokens=False).ids]


def detokenize(tokenizer, ids: list[int]) -> str:
    """Text of ``ids``; ids the tokenizer lacks (a preset's vocab is larger than its tokenizer) show as <id:N>."""
    parts, run = [], []
    for i in ids:
        if tokenizer.id_to_token(i) is None:
            parts += [tokenizer.decode(run), f"<id:{i}>"]
            run = []
        else:
            run.append(i)
    return "".join([*parts, tokenizer.decode(run)])


@dataclass
class VlmResult:
    tokens: list[int]
    text: str
    generation: Generation
    visual_tokens: int  # K
    prompt_tokens: int  # n, visual tokens included
    timings_ms: dict[str, float]  # preprocess, vision, prefill, ttft (image in -> first token), decode


class VlmPipeline:
    """A verified vlm artifact with its three pipelines; ``generate(image, prompt)`` -> VlmResult.

    ``memory_budget_mb``: each pipeline keeps what fits resident and streams the rest.
    """

    def __init__(
        self,
        root: str | Path,
        memory_budget_mb: float | None = None,
        providers: Providers | None = None,
        prompt: str | None = None,
        language_model: Callable[[Artifact], LanguageModelRunner] | None = None,
    ) -> None:
        """``prompt``: the one the first generation asks, so the prefill length it runs loads now, not
        inside its time to first token (default: the longest, P). ``language_model``: what runs the text side
        (default: the artifact's own prefill / decode chunks); it gets the verified artifact."""
        t0 = time.perf_counter()
        self.artifact = open_artifact(root, (contract.VLM,))
        t1 = time.perf_counter()
        self.llm = self.artifact.manifest["llm"]
        self.tokenizer = load_tokenizer(self.artifact.data_file(contract.TOKENIZER))
        self.vision = ChunkLoader(self.artifact, memory_budget_mb, providers=providers, pipeline=contract.VISION)
        if language_model is None:
            self.lm = LanguageModelRunner(self.artifact, memory_budget_mb, providers)
        else:
            self.lm = language_model(self.artifact)
        self.vision.warm()
        self.lm.warm(None if prompt is None else self.prompt_tokens(prompt))
        self.load_ms = {"verify_ms": (t1 - t0) * 1e3, "load_ms": (time.perf_counter() - t1) * 1e3}

    def pixel_values(self, image: Image.Image) -> np.ndarray:
        pp = self.artifact.manifest["preprocessing"]
        return preprocess(image, pp["image_size"], tuple(pp["grid"]), pp["mean"], pp["std"])

    def prompt_tokens(self, prompt: str) -> int:
        """n, the prefill tokens of ``prompt`` in the template with its K visual tokens."""
        ids = prompt_ids(self.tokenizer, self.llm["template"], prompt, self.llm["image_token_id"])
        return len(ids) - 1 + self.llm["visual_tokens"]

    def embed_prompt(self, prompt: str, visual: np.ndarray) -> tuple[list[int], np.ndarray]:
        """(ids with one image token, embeddings [n, D] with the K visual rows [K, D] spliced in)."""
        image_token = self.llm["image_token_id"]
        ids = prompt_ids(self.tokenizer, self.llm["template"], prompt, image_token)
        return ids, splice_visual(ids, self.lm.table, visual, image_token)

    def generate(
        self,
        image: Image.Image | str | Path,
        prompt: str,
        max_new_tokens: int,
        on_text: Callable[[str], None] | None = None,
        stop_at_eos: bool = True,
    ) -> VlmResult:
        """Greedy answer to ``prompt`` about ``image``; ``on_text`` receives the new text as each token decodes.

        ``stop_at_eos=False``: always ``max_new_tokens`` tokens (benchmarks at a fixed output length)."""
        img = image if isinstance(image, Image.Image) else load_image(image)
        t0 = time.perf_counter()
        x = self.pixel_values(img)
        t1 = time.perf_counter()
        visual = self.vision.run({contract.PIXEL_VALUES: x})[contract.TOKENS][0]
        t2 = time.perf_counter()
        ids, embeds = self.embed_prompt(prompt, visual)
        shown: list[str] = [""]
        new: list[int] = []

        def on_token(token: int) -> None:
            new.append(token)
            text = detokenize(self.tokenizer, new)
            if on_text and text.startswith(shown[0]):
                on_text(text[len(shown[0]) :])
            shown[0] = text

        eos = set(self.llm.get("eos_token_ids", [])) if stop_at_eos else set()
        gen = self.lm.generate(embeds, max_new_tokens, eos, on_token)
        timings = {
            "preprocess_ms": (t1 - t0) * 1e3,
            "vision_ms": (t2 - t1) * 1e3,
            "prefill_ms": gen.ttft_s * 1e3,
            "ttft_ms": (t2 - t0 + gen.ttft_s) * 1e3,
            "decode_ms": gen.decode_s * 1e3,
        }
        return VlmResult(gen.tokens, detokenize(self.tokenizer, gen.tokens), gen, len(visual), len(embeds), timings)

    def close(self) -> None:
        self.vision.close()
        self.lm.close()
