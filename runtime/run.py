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
    | {"lpl_min_steps", "guidance", "seed", "out", "noise", "json", "decoder"},
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
    decoder: Path | None = None  # video denoiser: the video-decoder artifact that turns its latent into video

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
    """Caption (file, `text_encoder` + `prompt_text`, or a seeded stand-in) -> latent, and with `decoder` on to
    the video: latent.npy, contact_sheet.png, [video.mp4, video.gif], timeline.png and run.json (last) in `out`."""
    import json

    from edgetrim.runtime.sampler import LeapRule, check_plan
    from edgetrim.runtime.text_to_video import Sampling, generate, stage_rows, timeline_png
    from edgetrim.runtime.video import load_caption, load_noise, random_caption, write_outputs

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
    policy = opts.verify or ONCE
    denoiser = open_artifact(root, (contract.VIDEO_DENOISER,))  # verified by run(): finds the fresh stamp
    video = denoiser.manifest["video"]
    length, channels = video["caption_length"], video["caption_channels"]
    decoder = open_artifact(opts.decoder, (contract.VIDEO_DECODER,), policy) if opts.decoder is not None else None
    seed = opts.seed or 0
    if opts.caption is not None:
        caption, note = load_caption(opts.caption, length, channels), str(opts.caption)
    elif opts.text_encoder is not None:
        from edgetrim.runtime.text import check_width, encode_prompt

        encoder = open_artifact(opts.text_encoder, (contract.TEXT_ENCODER,), policy)
        check_width(encoder, channels)
        if not opts.prompt_text:
            raise UserError("`text_encoder` needs `prompt_text`: pass the caption text")

        def caption():
            return encode_prompt(opts.text_encoder, opts.prompt_text, length, channels, opts.memory_budget_mb)

        note = f"{opts.prompt_text!r} encoded by {opts.text_encoder}"
    else:
        caption, note = random_caption(length, channels, seed), f"seeded random stand-in ({seed})"
    noise = load_noise(opts.noise) if opts.noise is not None else None
    sampling = Sampling(steps, merge, opts.leap_at, rule, opts.guidance, seed, noise)
    generated = generate(denoiser, caption, sampling, decoder, opts.memory_budget_mb, lambda i: progress(i + 1, steps))
    out = opts.out or Path(root) / "run"
    random_weights = any(a.random_weights for a in (denoiser, decoder) if a is not None)
    record, written = write_outputs(generated.sample, out, random_weights)
    record |= {"caption": note, "stages": stage_rows(generated.stages), "memory": generated.plans}
    record["peak_rss"] = "per stage" if generated.own_peaks else "running peak of the process"
    if generated.decoded is not None:
        from edgetrim.runtime.video_decoder import write_video

        frames = generated.decoded.frames
        files, video_note = write_video(frames, out, decoder.manifest["decoder"]["fps"])
        written += files
        record["video"] = {"frames_shape": list(frames.shape), "fps": decoder.manifest["decoder"]["fps"]}
        record["video"] |= {"note": video_note} if video_note else {}
    written.append(timeline_png({"run": generated.timeline}, out / "timeline.png"))
    record["timeline"] = generated.timeline
    (out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    written.append(out / "run.json")
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(record, indent=2) + "\n")
    summary = {"manifest": denoiser.manifest, "result": generated.sample, "caption": note}
    summary |= {"plan": generated.plans[contract.VIDEO_DENOISER], "generated": generated, "record": record}
    return summary | {"steps": steps, "adaptive": rule is not None, "written": [str(p) for p in written]}


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
