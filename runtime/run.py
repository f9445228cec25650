"""``run``: one artifact on one input, whatever its kind; writes the outputs, returns what a summary shows.

``RunOptions`` holds every option of every kind; ``None`` (False for flags) means not given and takes
the kind's default. An option given for an artifact of a kind it does not apply to is refused.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from edgetrim.runtime import contract
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import open_artifact, read_manifest, verify_artifact
from edgetrim.runtime.verify_stamp import ONCE

KIND_OPTIONS = {
    contract.VISION_ENCODER: {"image", "overlay", "json"},
    contract.VLM: {"image", "prompt", "max_new_tokens"},
    contract.LANGUAGE_MODEL: {"prompt", "max_new_tokens"},
    contract.VIDEO_DENOISER: {"caption", "text_encoder", "prompt_text", "steps", "merge_steps", "leap_at", "lpl"}
    | {"lpl_min_steps", "guidance", "seed", "out", "noise", "json"},
    contract.TEXT_ENCODER: {"prompt_text", "out"},
    contract.VIDEO_DECODER: {"latent", "out"},
}
DEFAULT_PROMPT = "Describe the image in one sentence."


@dataclass
class RunOptions:
    memory_budget_mb: float | None = None  # every kind: keep what fits resident, stream the rest
    verify: str | None = None  # every kind: sha256 "once" (default: then trust the stamp while unchanged) or "always"
    image: Path | None = None
    overlay: Path | None = None
    json: Path | None = None
    prompt: str | None = None
    max_new_tokens: int | None = None
    caption: Path | None = None
    text_encoder: Path | None = None
    prompt_text: str | None = None
    steps: int | None = None
    merge_steps: int | None = None
    leap_at: int | None = None
    lpl: bool = False
    lpl_min_steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    out: Path | None = None
    noise: Path | None = None
    latent: Path | None = None

    def check(self, kind: str) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("memory_budget_mb", "verify") and value is not None and value is not False:
                if f.name not in KIND_OPTIONS[kind]:
                    takers = [k for k, names in KIND_OPTIONS.items() if f.name in names]
                    raise UserError(
                        f"`{f.name}` does not apply to {kind} artifacts; it applies to {' and '.join(takers)}: drop it"
                    )


def stream(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run_vlm(root: Path, opts: RunOptions, on_text: Callable[[str], None]) -> dict:
    from edgetrim.runtime.preprocess import load_image
    from edgetrim.runtime.vlm import VlmPipeline

    if opts.image is None:
        raise UserError(f"{root} is a VLM: pass `image` PATH and `prompt` TEXT")
    image = load_image(opts.image)
    pipeline = VlmPipeline(root, memory_budget_mb=opts.memory_budget_mb, prompt=opts.prompt)
    try:
        result = pipeline.generate(image, opts.prompt or DEFAULT_PROMPT, opts.max_new_tokens or 32, on_text=on_text)
    finally:
        pipeline.close()
    plan = pipeline.vision.plan.describe() if opts.memory_budget_mb is not None else None
    return {"manifest": pipeline.artifact.manifest, "result": result, "load_ms": pipeline.load_ms, "plan": plan}


def run_language_model(root: Path, opts: RunOptions, on_text: Callable[[str], None]) -> dict:
    from edgetrim.runtime.llm import LanguageModelRunner, load_tokenizer
    from edgetrim.runtime.vlm import detokenize

    if not opts.prompt:
        raise UserError(f"{root} is a language model: pass `prompt` TEXT")
    artifact = open_artifact(root, (contract.LANGUAGE_MODEL,))
    if not any(f["role"] == contract.TOKENIZER for f in artifact.manifest.get("files", [])):
        raise UserError(f"{root} holds no tokenizer: export the model from a folder with tokenizer.json")
    tokenizer = load_tokenizer(artifact.data_file(contract.TOKENIZER))
    runner = LanguageModelRunner(artifact, opts.memory_budget_mb)
    ids = tokenizer.encode(opts.prompt).ids
    new: list[int] = []

    def on_token(token: int) -> None:
        before = detokenize(tokenizer, new)
        new.append(token)
        after = detokenize(tokenizer, new)
        on_text(after[len(before) :] if after.startswith(before) else "")

    try:
        runner.warm(len(ids))
        gen = runner.generate(runner.embed(ids), opts.max_new_tokens or 32, (), on_token)
    finally:
        runner.close()
    return {"manifest": artifact.manifest, "prompt_tokens": len(ids), "generation": gen}


def run_video(root: Path, opts: RunOptions, progress: Callable[[int, int], None]) -> dict:
    from edgetrim.runtime.sampler import LeapRule, check_plan
    from edgetrim.runtime.video import VideoDenoiser, load_caption, load_noise, random_caption, write_outputs

    steps, merge = opts.steps or 30, opts.merge_steps or 0
    check_plan(steps, merge, opts.leap_at)
    rule = None
    if opts.lpl:
        if opts.leap_at is not None:
            raise UserError("`lpl` and `leap_at` both set: pass one (adaptive or fixed leap)")
        min_steps = 10 if opts.lpl_min_steps is None else opts.lpl_min_steps
        if not 1 <= min_steps < steps:
            raise UserError(f"`lpl_min_steps` {min_steps} is outside 1..{steps - 1} (`steps` {steps})")
        rule = LeapRule(min_steps=min_steps)
    elif opts.lpl_min_steps is not None:
        raise UserError("`lpl_min_steps` applies to the adaptive leap: add `lpl` or drop it")
    if opts.caption is not None and opts.text_encoder is not None:
        raise UserError("`caption` and `text_encoder` both set: pass caption embeddings or a text encoder, not both")
    if opts.prompt_text and opts.text_encoder is None:
        raise UserError("`prompt_text` on a video denoiser needs `text_encoder` DIR to encode it")
    if opts.text_encoder is not None:  # checked under `verify` now; encode_prompt then finds its stamp
        open_artifact(opts.text_encoder, (contract.TEXT_ENCODER,), opts.verify or ONCE)
    seed = opts.seed or 0
    noise = load_noise(opts.noise) if opts.noise is not None else None
    with VideoDenoiser(root, opts.memory_budget_mb) as denoiser:
        length, channels = denoiser.caption_shape()
        if opts.caption is not None:
            caption, note = load_caption(opts.caption, length, channels), str(opts.caption)
        elif opts.text_encoder is not None:
            from edgetrim.runtime.text import encode_prompt

            caption = encode_prompt(opts.text_encoder, opts.prompt_text, length, channels, opts.memory_budget_mb)
            note = f"{opts.prompt_text!r} encoded by {opts.text_encoder}"
        else:
            caption, note = random_caption(length, channels, seed), f"seeded random stand-in ({seed})"
        result = denoiser.generate(
            caption, steps, merge, opts.leap_at, rule, opts.guidance, seed, lambda i: progress(i + 1, steps), noise
        )
        plan = denoiser.loader.plan.describe()
    record = write_outputs(result, opts.out or Path(root) / "run", denoiser.artifact.random_weights)
    if opts.json:
        import json

        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps({k: v for k, v in record.items() if k != "written"}, indent=2) + "\n")
    summary = {"manifest": denoiser.artifact.manifest, "result": result, "caption": note, "plan": plan}
    return summary | {"steps": steps, "adaptive": rule is not None, "written": record["written"]}


def run(
    root: Path,
    opts: RunOptions,
    on_text: Callable[[str], None] = stream,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> tuple[str, dict]:
    """(artifact kind, what its summary shows). ``on_text`` receives generated text as it decodes,
    ``progress(done, total)`` the sampling steps. The summary's ``verify`` says how the files were checked."""
    artifact = read_manifest(root)
    kind = artifact.kind
    opts.check(kind)
    # the files are checked here under `verify`; the runner's own open then finds the fresh stamp (stat only)
    verification = verify_artifact(artifact, opts.verify or ONCE).verification
    if kind == contract.VISION_ENCODER:
        from edgetrim.runtime import vision

        if opts.image is None:
            raise UserError(f"{root} is a vision encoder: pass `image` PATH")
        summary = vision.run(root, opts.image, opts.overlay, opts.json, opts.memory_budget_mb)
    elif kind == contract.VLM:
        summary = run_vlm(root, opts, on_text)
    elif kind == contract.LANGUAGE_MODEL:
        summary = run_language_model(root, opts, on_text)
    elif kind == contract.VIDEO_DENOISER:
        summary = run_video(root, opts, progress)
    elif kind == contract.VIDEO_DECODER:
        from edgetrim.runtime import video_decoder

        summary = video_decoder.run(root, opts.latent, opts.out, opts.memory_budget_mb)
    else:
        from edgetrim.runtime import text

        summary = text.run(root, opts.prompt_text, opts.out, opts.memory_budget_mb)
    return kind, summary | {"verify": verification}
