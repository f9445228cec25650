"""Text -> video across three artifacts, torch-free for ONNX: text encoder -> video denoiser -> video decoder.

``generate`` checks the artifacts fit together before anything loads (the text encoder's width against the
denoiser's captions, the decoder against the denoiser's latents: ``check_pair``), then runs the stages one
after another, each closing its sessions before the next opens. ``StageClock`` measures every stage: wall time
and the process's peak resident memory during it (VmHWM restarted at the stage's start where Linux allows it;
elsewhere the running peak, which ``Generated.own_peaks`` says). Stage names are the artifact kinds.

The ``timeline`` is one list of spans in ms from the start, each {stage, lane: load | compute, label, start_ms,
end_ms}: the text encoder as one span, the denoiser's chunk loads and one compute span per sampling step
(label: the function it ran, ``tdtm`` or ``plain``), the decoder's chunk loads and computes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetrim.runtime import contract
from edgetrim.runtime.bench import peak_rss_mb, reset_peak_rss
from edgetrim.runtime.manifest import Artifact
from edgetrim.runtime.sampler import LeapRule, SampleResult
from edgetrim.runtime.video import Caption, VideoDenoiser
from edgetrim.runtime.video_decoder import Decoded, DecoderRunner, check_pair


@dataclass
class Sampling:
    """How the denoiser samples: ``steps`` in all, TDTM for the first ``merge_steps``, a fixed leap at
    ``leap_at`` or the adaptive ``rule``; ``noise`` [C, T, H, W] (default: seeded by ``seed``)."""

    steps: int = 30
    merge_steps: int = 0
    leap_at: int | None = None
    rule: LeapRule | None = None
    guidance: float | None = None
    seed: int = 0
    noise: np.ndarray | None = None


@dataclass
class StageClock:
    """Wall time and peak RSS per stage (``stages``) and the pipeline's ``timeline`` (see module doc)."""

    t0: float = field(default_factory=time.perf_counter)
    stages: list[dict] = field(default_factory=list)
    timeline: list[dict] = field(default_factory=list)
    own_peaks: bool = True

    def ms(self, t: float) -> float:
        return (t - self.t0) * 1e3

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.own_peaks &= reset_peak_rss()
        start = time.perf_counter()
        yield
        end = time.perf_counter()
        self.stages.append(
            {
                "stage": name,
                "start_ms": self.ms(start),
                "ms": (end - start) * 1e3,
                "peak_rss_mb": peak_rss_mb(),
            }
        )

    def span(self, stage: str, lane: str, label: str, start_ms: float, end_ms: float) -> None:
        self.timeline.append({"stage": stage, "lane": lane, "label": label, "start_ms": start_ms, "end_ms": end_ms})


@dataclass
class Generated:
    """One text-to-video run: the sampled latent, the decoded video (None without a decoder) and the measures."""

    sample: SampleResult
    decoded: Decoded | None
    stages: list[dict]
    timeline: list[dict]
    plans: dict[str, str]  # stage -> its memory plan
    own_peaks: bool  # each stage's peak is its own (False: the process's running peak)


def generate(
    denoiser: Artifact,
    caption: Caption | Callable[[], Caption],
    sampling: Sampling,
    decoder: Artifact | None = None,
    memory_budget_mb: float | None = None,
    progress: Callable[[int], None] = lambda i: None,
) -> Generated:
    """Caption -> latent -> video. ``caption``: a Caption, or the text encoder's stage (a callable run and
    measured as ``text-encoder``). ``progress(i)`` after each sampling step (0-based). The denoiser and decoder
    are checked (their pair, every pipeline's chunks) before any stage runs; no session opens before its stage."""
    if decoder is not None:
        check_pair(denoiser, decoder)
    with ExitStack() as stack:
        model = stack.enter_context(VideoDenoiser(denoiser, memory_budget_mb))
        runner = stack.enter_context(DecoderRunner(decoder, memory_budget_mb)) if decoder is not None else None
        clock = StageClock()
        if callable(caption):
            with clock.stage(contract.TEXT_ENCODER):
                caption = caption()
            stage = clock.stages[-1]
            clock.span(contract.TEXT_ENCODER, "compute", "encode", stage["start_ms"], stage["start_ms"] + stage["ms"])
        with clock.stage(contract.VIDEO_DENOISER):
            sample = denoise(model, caption, sampling, clock, progress)
            model.close()  # its sessions go before the decoder's open
        plans = {contract.VIDEO_DENOISER: model.loader.plan.describe()}
        decoded = None
        if runner is not None:
            with clock.stage(contract.VIDEO_DECODER):
                start = clock.ms(time.perf_counter())
                decoded = runner.decode_video(sample.latent)
                runner.close()
            for e in decoded.timeline:
                clock.span(contract.VIDEO_DECODER, e["kind"], e["chunk"], start + e["start_ms"], start + e["end_ms"])
            plans[contract.VIDEO_DECODER] = "; ".join(f"{p}: {d}" for p, d in decoded.memory.items())
    return Generated(sample, decoded, clock.stages, clock.timeline, plans, clock.own_peaks)


def denoise(
    model: VideoDenoiser, caption: Caption, sampling: Sampling, clock: StageClock, progress: Callable[[int], None]
) -> SampleResult:
    """Sample on ``model``; the clock gets a compute span per step (label: its function) and the chunk loads."""
    step_ends: list[float] = []

    def on_step(i: int) -> None:
        step_ends.append(time.perf_counter())
        progress(i)

    s = sampling
    sample = model.generate(caption, s.steps, s.merge_steps, s.leap_at, s.rule, s.guidance, s.seed, on_step, s.noise)
    for function, ms, end in zip(sample.functions, sample.step_ms, step_ends, strict=True):
        clock.span(contract.VIDEO_DENOISER, "compute", function, clock.ms(end) - ms, clock.ms(end))
    for event in model.loader.timeline.events:
        if event.kind == "load":
            clock.span(contract.VIDEO_DENOISER, "load", event.chunk, clock.ms(event.start), clock.ms(event.end))
    return sample


def stage_rows(stages: list[dict]) -> list[dict]:
    """run.json's per-stage record: stage, ms, peak_rss_mb (rounded for reading)."""
    return [{"stage": s["stage"], "ms": round(s["ms"], 1), "peak_rss_mb": round(s["peak_rss_mb"], 1)} for s in stages]


def timeline_png(runs: dict[str, list[dict]], path: Path) -> Path:
    """One panel per run (same time scale), a load lane and a compute lane; colour = stage, and within the
    denoiser a darker shade for TDTM steps than for plain ones."""
    from PIL import Image, ImageDraw

    colours = {
        contract.TEXT_ENCODER: (244, 180, 0),
        contract.VIDEO_DENOISER: (66, 133, 244),
        contract.TDTM: (25, 70, 160),
        contract.VIDEO_DECODER: (15, 157, 88),
    }
    width, lane, label_w = 1400, 22, 170
    height = 40 + len(runs) * (2 * lane + 34) + 40
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    longest = max((max(s["end_ms"] for s in spans) for spans in runs.values() if spans), default=1.0)
    scale = (width - label_w - 20) / max(longest, 1e-6)
    draw.text((10, 10), f"text -> video timeline (same time scale, {longest / 1e3:.1f} s across)", fill="black")
    y = 40
    for name, spans in runs.items():
        draw.text((10, y), name, fill="black")
        for row, kind in enumerate(("load", "compute")):
            top = y + 14 + row * lane
            draw.text((100, top + 4), kind, fill=(90, 90, 90))
            for s in (s for s in spans if s["lane"] == kind):
                shade = contract.TDTM if s["label"] == contract.TDTM else s["stage"]
                x0 = label_w + s["start_ms"] * scale
                x1 = max(x0 + 1, label_w + s["end_ms"] * scale)
                draw.rectangle([x0, top, x1, top + lane - 4], fill=colours[shade], outline="white")
        y += 2 * lane + 34
    x = 10
    legend = {"text encoder": contract.TEXT_ENCODER, "denoiser plain step": contract.VIDEO_DENOISER}
    legend |= {"denoiser tdtm step": contract.TDTM, "decoder": contract.VIDEO_DECODER}
    for label, key in legend.items():
        draw.rectangle([x, y, x + 12, y + 12], fill=colours[key])
        draw.text((x + 16, y), label, fill="black")
        x += 30 + 7 * len(label)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
