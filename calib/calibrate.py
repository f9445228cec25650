"""``edgetrim calibrate``: the smallest HiRED budget that keeps a model's answers on calibration data.

Every candidate (budget, alpha) is compared with the unreduced model on every calibration item. A VLM's
items are image x prompt; its metrics, per item: ``first-token`` (1 when the first answer token is the
unreduced model's top-1), ``kl`` (exp(-KL(unreduced || reduced)) of the first token's distribution: 1 when
equal), ``greedy`` (share of the first N greedy tokens equal up to the first miss) and ``cosine`` (the pooled
visual tokens'). A vision-only model's items are its images and its one metric is ``cosine``: the mean of
the kept (projected) tokens against the mean of all of them. The target applies to the mean over items.

Efficient by construction: HiRED's scores do not depend on the budget, so the vision encoder runs once per
image (``vision_passes``); per candidate only the head stage (budgets, selection, gather, projector) and the
language model run, once per distinct static budget. Writes ``report.json``, ``report.md`` and
``fidelity_vs_budget.png`` into the output folder.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from edgetrim.calib.data import CalibrationSet, calibration_set
from edgetrim.calib.report import REPORT_JSON
from edgetrim.export.families.vision import VisionTower, load_tower
from edgetrim.export.kinds import vision, vlm
from edgetrim.export.kinds.language_model import GATE_TOKENS
from edgetrim.export.options import DEFAULT_MODEL, ExportOptions
from edgetrim.export.presets import VLM_PRESETS, kind_of
from edgetrim.export.reducers.budget import HiredBudget, resolve_budget
from edgetrim.export.stages.base import run_stages
from edgetrim.export.stages.vision import HeadStage, ReducedVisionEncoder, ReductionPlan
from edgetrim.export.validate import LanguageFidelity, cosine, language_fidelity_case
from edgetrim.runtime import contract
from edgetrim.runtime.embedding import EmbeddingTable
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.llm import load_tokenizer, splice_visual
from edgetrim.runtime.manifest import write_json
from edgetrim.runtime.preprocess import preprocess
from edgetrim.runtime.vlm import prompt_ids

LANGUAGE_METRICS = ("first-token", "kl", "greedy")
VLM_METRICS = (*LANGUAGE_METRICS, "cosine")
VISION_METRICS = ("cosine",)
DEFAULT_BUDGETS = "0.05:1.0:0.05"
DEFAULT_ALPHAS = "0.5"  # HiRED's default share of the budget for the full view
WORST_ITEMS = 3
REPORT_MD = "report.md"
PLOT_PNG = "fidelity_vs_budget.png"
MEASURE_TOKENS = 4  # new tokens per timed generation of --measure
RANDOM_NOTE = (
    "random weights (seeded preset): these figures measure untrained weights and say nothing about the budget a "
    "real model needs; calibrate a checkpoint for a budget to ship"
)


@dataclass
class CalibrateOptions:
    """``edgetrim calibrate``'s options; ``None`` takes the default."""

    out: Path
    model: str | None = None
    calib_images: Path | None = None
    calib_prompts: Path | None = None
    target_fidelity: float = 0.95
    metric: str | None = None  # None: first-token (vlm), cosine (vision-encoder)
    budgets: str | None = None  # fractions "0.1,0.2" or a range "start:stop:step"
    alphas: str | None = None
    greedy_tokens: int = GATE_TOKENS
    grid: str | None = None
    image_size: int | None = None
    feature_layer: int | None = None
    with_llm: bool = False  # a LLaVA folder: calibrate the whole VLM, not its tower alone
    measure: bool = False  # export the chosen budget and the unreduced model to ONNX and time TTFT

    @property
    def model_spec(self) -> str:
        return self.model or DEFAULT_MODEL


def parse_fractions(text: str, name: str, allow_zero: bool = False) -> list[float]:
    """'0.1,0.2,0.5' or a range 'start:stop:step' (stop included) -> ascending distinct fractions in (0, 1]
    ([0, 1] with ``allow_zero``)."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            values = [round(start + i * step, 6) for i in range(int(round((stop - start) / step)) + 1)]
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
        if not values:
            raise ValueError
    except ValueError:
        raise UserError(
            f"`{name}` {text!r} is not a list of fractions: pass e.g. 0.1,0.2,0.5 or a range 0.05:1.0:0.05"
        ) from None
    low = "[0" if allow_zero else "(0"
    bad = [v for v in values if not (0 <= v <= 1 if allow_zero else 0 < v <= 1)]
    if bad:
        raise UserError(f"`{name}` {bad[0]} is outside {low}, 1]: pass fractions such as 0.05,0.1,0.5,1.0")
    return sorted(set(values))


def check_request(opts: CalibrateOptions, kind: str) -> str:
    """The metric the target applies to; refuses another kind of model, a target outside (0, 1], a metric the
    model cannot give and options a vision encoder does not take."""
    if kind not in (contract.VLM, contract.VISION_ENCODER):
        raise UserError(
            f"{opts.model_spec} is a {kind} model: calibrate takes VLMs (a VLM preset, or a LLaVA folder with "
            "`with_llm`) and vision encoders"
        )
    if not 0 < opts.target_fidelity <= 1:
        raise UserError(
            f"`target_fidelity` {opts.target_fidelity} is outside (0, 1]: pass the mean fidelity to keep, e.g. 0.95"
        )
    if opts.greedy_tokens < 1:
        raise UserError(f"`greedy_tokens` {opts.greedy_tokens} must be at least 1: e.g. {GATE_TOKENS}")
    metrics = VLM_METRICS if kind == contract.VLM else VISION_METRICS
    metric = opts.metric or metrics[0]
    if metric in LANGUAGE_METRICS and kind != contract.VLM:
        raise UserError(
            f"`metric` {metric} needs a language model; {opts.model_spec} is a {kind} model: pass `metric` cosine "
            "(pooled visual tokens), or a VLM"
        )
    if metric not in metrics:
        raise UserError(f"`metric` {metric!r} is unknown: choose one of {', '.join(metrics)}")
    for name in ("calib_prompts", "measure"):
        if getattr(opts, name) and kind != contract.VLM:
            raise UserError(f"`{name}` applies to VLMs; {opts.model_spec} is a {kind} model: drop it")
    return metric


def budget_key(budget: HiredBudget) -> tuple[int, int, int]:
    """What HiRED's selection depends on: K, the full view's share and the marked count (not the alpha given)."""
    return budget.total, budget.full_view, budget.marked


class VisionPasses:
    """The tower's one pass per image (``passes`` counts them) and the head stage of each static budget."""

    def __init__(self, tower: VisionTower, geometry: ReductionPlan) -> None:
        self.tower, self.geometry = tower, geometry
        front = ReducedVisionEncoder(tower, replace(geometry, method="hired")).eval()
        self.front = list(front.stages)[:-1]  # embedding + blocks, emitting the early and selection scores
        self.heads: dict[tuple, HeadStage] = {}
        self.passes = 0

    def encode(self, image) -> dict[str, torch.Tensor]:
        """An image -> the head's inputs: ``hidden_L`` [P, T, D], early and selection scores [P, N]."""
        tower = self.tower
        pixels = preprocess(image, tower.image_size, self.geometry.grid, tower.mean, tower.std)
        self.passes += 1
        return run_stages(self.front, {contract.PIXEL_VALUES: torch.from_numpy(pixels)})

    def tokens(self, encoded: dict[str, torch.Tensor], budget: HiredBudget | None) -> np.ndarray:
        """[K, D] kept (projected) tokens at ``budget``; None: every token, unreduced."""
        key = None if budget is None else budget_key(budget)
        if key not in self.heads:
            plan = self.geometry if budget is None else replace(self.geometry, method="hired", budget=budget)
            self.heads[key] = HeadStage(self.tower, plan).eval()
        out = run_stages([self.heads[key]], encoded)
        return out[contract.TOKENS][0].numpy()


def first_token_kl(reference: np.ndarray, reduced: np.ndarray) -> float:
    """KL(softmax(reference) || softmax(reduced)) of two [V] logit vectors, in nats."""
    log_p = torch.log_softmax(torch.from_numpy(reference).double(), -1)
    log_q = torch.log_softmax(torch.from_numpy(reduced).double(), -1)
    return float((log_p.exp() * (log_p - log_q)).sum())


@dataclass
class LanguageSide:
    """What scoring a VLM's answers needs: the causal LM, its token table, tokenizer, template and image id."""

    model: torch.nn.Module
    table: EmbeddingTable
    tokenizer: object
    template: str
    image_token_id: int

    @classmethod
    def of(cls, src: vlm.VlmSource) -> LanguageSide:
        table = EmbeddingTable(src.model.get_input_embeddings().weight.detach().float().numpy())
        return cls(src.model.eval(), table, load_tokenizer(src.tokenizer_dir), src.template, src.image_token_id)

    def prompt(self, text: str) -> list[int]:
        return prompt_ids(self.tokenizer, self.template, text, self.image_token_id)

    def answer(self, ids: list[int], visual: np.ndarray, steps: int) -> dict[str, np.ndarray]:
        """First-token logits [V] and ``steps`` greedy token ids of the prompt ``ids`` around ``visual`` [K, D].

        transformers' KV cache carries the prompt, so each further token costs one position (``greedy_case``,
        the exporter's check, recomputes the whole sequence every step)."""
        embeds = torch.from_numpy(splice_visual(ids, self.table, visual, self.image_token_id))[None]
        tokens, cache, first = [], None, None
        with torch.no_grad():
            while len(tokens) < steps:
                out = self.model(inputs_embeds=embeds, past_key_values=cache, use_cache=True)
                logits, cache = out.logits[0, -1], out.past_key_values
                first = logits.numpy() if first is None else first
                tokens.append(int(logits.argmax()))
                embeds = torch.from_numpy(self.table.rows(tokens[-1:]))[None]
        return {contract.LOGITS: first, "token_ids": np.array(tokens, np.int64)}


UNGATED = LanguageFidelity(gated=False)


def pooled_cosine(visual: np.ndarray, full: np.ndarray) -> float:
    """Cosine of the mean kept token [K, D] to the mean of all tokens [P*N, D]."""
    return cosine(visual.mean(0), full.mean(0))


def item_figures(ref: dict, got: dict, ref_visual: np.ndarray, visual: np.ndarray) -> dict:
    """One item's metrics at one budget against the unreduced model."""
    lang = language_fidelity_case("", got, ref, UNGATED)
    kl = first_token_kl(ref[contract.LOGITS], got[contract.LOGITS])
    return {
        "first-token": float(lang["top1_agrees"]),
        "kl": math.exp(-kl),
        "greedy": lang["greedy_agreement"],
        "cosine": pooled_cosine(visual, ref_visual),
        "kl_divergence": kl,
        "logit_cosine": lang["logit_cosine"],
    }


def measure_items(
    passes: VisionPasses,
    calib: CalibrationSet,
    budgets: list[HiredBudget],
    language: LanguageSide | None,
    steps: int,
    advance: Callable[[int, int], None],
) -> tuple[dict[tuple, list[dict]], list[int]]:
    """{budget_key: per-item figures} over every item, and each item's text tokens (VLM; [] for vision)."""
    distinct = list({budget_key(b): b for b in budgets}.values())
    prompts = calib.prompts if language else [None]
    total, done = len(calib.images) * (1 + len(prompts) * len(distinct)), 0
    figures: dict[tuple, list[dict]] = {budget_key(b): [] for b in distinct}
    text_tokens: list[int] = []
    for name, image in zip(calib.image_names, calib.images, strict=True):
        encoded = passes.encode(image)
        done += 1
        advance(done, total)
        full = passes.tokens(encoded, None)
        kept = {budget_key(b): passes.tokens(encoded, b) for b in distinct}
        for p, text in enumerate(prompts):
            item = name if text is None else f"{name} + prompt-{p}"
            if language is not None:
                ids = language.prompt(text)
                text_tokens.append(len(ids) - 1)
                ref = language.answer(ids, full, steps)
            for key, visual in kept.items():
                if language is None:
                    figures[key].append({"item": item, "cosine": pooled_cosine(visual, full)})
                else:
                    got = language.answer(ids, visual, steps)
                    figures[key].append({"item": item, **item_figures(ref, got, full, visual)})
                done += 1
                advance(done, total)
    return figures, text_tokens


def candidate_rows(
    budgets: list[tuple[float, float, HiredBudget]],
    figures: dict[tuple, list[dict]],
    metrics: tuple[str, ...],
    text_tokens: list[int],
    metric: str,
    target: float,
) -> list[dict]:
    """One row per (budget, alpha): K, relative prefill tokens, each metric's mean and min over items."""
    rows = []
    for fraction, alpha, budget in budgets:
        items = figures[budget_key(budget)]
        available = budget.partitions * budget.tokens_per_partition
        texts = text_tokens or [0]
        row = {
            "budget": fraction,
            "alpha": alpha,
            "tokens": budget.total,
            "available_tokens": available,
            "kept_fraction": budget.total / available,
            "relative_prefill": float(np.mean([(budget.total + t) / (available + t) for t in texts])),
            "metrics": {
                m: {"mean": float(np.mean([i[m] for i in items])), "min": float(min(i[m] for i in items))}
                for m in metrics
            },
        }
        if "kl_divergence" in items[0]:
            kls = [i["kl_divergence"] for i in items]
            row["kl_divergence"] = {"mean": float(np.mean(kls)), "max": float(max(kls))}
        row["meets_target"] = row["metrics"][metric]["mean"] >= target
        rows.append(row)
    return rows


def choose(rows: list[dict], figures: dict, budgets: list, metric: str, target: float) -> dict | None:
    """The smallest budget whose mean ``metric`` meets ``target`` (its best alpha), with its worst items."""
    meeting = [(r, b) for r, (_, _, b) in zip(rows, budgets, strict=True) if r["meets_target"]]
    if not meeting:
        return None
    row, budget = min(meeting, key=lambda rb: (rb[0]["budget"], -rb[0]["metrics"][metric]["mean"]))
    items = sorted(figures[budget_key(budget)], key=lambda i: i[metric])
    worst = [{"item": i["item"], "value": i[metric]} for i in items[:WORST_ITEMS]]
    missed_above = [r["budget"] for r in rows if r["budget"] > row["budget"] and not r["meets_target"]]
    return {
        "budget": row["budget"],
        "alpha": row["alpha"],
        "tokens": row["tokens"],
        "achieved": row["metrics"][metric]["mean"],
        "worst_items": worst,
        "per_item": items,
        "larger_budgets_missing_target": sorted(set(missed_above)),
    }


def confidence(report: dict) -> str:
    """One sentence: what the choice rests on."""
    chosen, metric = report["chosen"], report["metric"]
    if chosen is None:
        best = max(report["candidates"], key=lambda r: r["metrics"][metric]["mean"])
        return (
            f"no candidate met mean {metric} >= {report['target']} over {report['items']} items "
            f"(best: {best['metrics'][metric]['mean']:.4f} at budget {best['budget']})"
        )
    worst = ", ".join(f"{w['item']} {w['value']:.4f}" for w in chosen["worst_items"])
    text = (
        f"budget {chosen['budget']} (alpha {chosen['alpha']}, K {chosen['tokens']}): mean {metric} "
        f"{chosen['achieved']:.4f} >= {report['target']} over {report['items']} items; worst: {worst}"
    )
    if chosen["larger_budgets_missing_target"]:
        text += f"; not monotone: larger budgets {chosen['larger_budgets_missing_target']} miss the target"
    return text


def markdown(report: dict) -> str:
    metrics = report["metrics"]
    lines = [f"# edgetrim calibrate: {report['model']} ({report['kind']})", ""]
    if report["random_weights"]:
        lines += [f"**{RANDOM_NOTE}.**", ""]
    calib = report["calibration"]
    skipped = f", {len(calib['skipped'])} unreadable skipped" if calib["skipped"] else ""
    lines += [
        f"Calibration set {calib['source']}: {calib['images']} images"
        + (f" x {calib['prompts']} prompts" if report["kind"] == contract.VLM else "")
        + f" = {report['items']} items{skipped}, sha256 {calib['sha256'][:16]}. Grid "
        f"{'x'.join(map(str, report['geometry']['grid']))}, image size {report['geometry']['image_size']}. "
        f"Vision passes: {report['vision_passes']} (one per image).",
        "",
        f"Target: mean {report['metric']} >= {report['target']}. {confidence(report)}.",
        "",
        "| budget | alpha | tokens kept | relative prefill tokens | "
        + " | ".join(f"{m} mean / min" for m in metrics)
        + " | meets |",
        "|---|---|---|---|" + "---|" * len(metrics) + "---|",
    ]
    for r in report["candidates"]:
        cells = " | ".join(f"{r['metrics'][m]['mean']:.4f} / {r['metrics'][m]['min']:.4f}" for m in metrics)
        chosen = report["chosen"] and (r["budget"], r["alpha"]) == (
            report["chosen"]["budget"],
            report["chosen"]["alpha"],
        )
        meets = "**chosen**" if chosen else "yes" if r["meets_target"] else "no"
        lines.append(
            f"| {r['budget']:g} | {r['alpha']:g} | {r['tokens']} / {r['available_tokens']} | "
            f"{r['relative_prefill']:.3f} | {cells} | {meets} |"
        )
    if "kl" in metrics:
        lines += ["", "kl is exp(-KL(unreduced || reduced)) of the first answer token's distribution (1: identical)."]
    if "measure" in report:
        m = report["measure"]
        lines += [
            "",
            f"Measured ({m['target']}, {m['new_tokens']} new tokens): TTFT {m['ttft_ms']:.0f} ms at budget "
            f"{m['budget']} vs {m['unreduced_ttft_ms']:.0f} ms unreduced ({m['ttft_ratio']:.2f}x).",
        ]
    return "\n".join(lines) + "\n"


def plot_png(report: dict, path: Path) -> Path:
    """Fidelity (mean of the target's metric, one line per alpha) and relative prefill tokens against the
    budget, the target as a dashed line, the choice marked; the measured TTFT ratio as a red dot."""
    from PIL import Image, ImageDraw

    palette = [(66, 133, 244), (15, 157, 88), (171, 71, 188), (255, 112, 67), (0, 172, 193)]
    width, height, left, top, right, bottom = 760, 460, 60, 40, 170, 50
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(budget: float, value: float) -> tuple[float, float]:
        return left + budget * plot_w, top + (1 - max(0.0, min(1.0, value))) * plot_h

    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x, y = xy(tick, tick)
        draw.text((x - 10, top + plot_h + 6), f"{tick:g}", fill="black")
        draw.text((left - 34, y - 6), f"{tick:g}", fill="black")
    metric, rows = report["metric"], report["candidates"]
    draw.text((left, 10), f"{report['model']}: mean {metric} vs budget (x: kept fraction requested)", fill="black")
    y_target = xy(0, report["target"])[1]
    for x in range(left, left + plot_w, 12):
        draw.line([x, y_target, x + 6, y_target], fill=(120, 120, 120))
    series = [
        (f"alpha {a:g}", [(r["budget"], r["metrics"][metric]["mean"]) for r in rows if r["alpha"] == a])
        for a in sorted({r["alpha"] for r in rows})
    ]
    prefill = sorted({(r["budget"], r["relative_prefill"]) for r in rows})
    series.append(("relative prefill", prefill))
    legend_y = top
    for i, (label, points) in enumerate(series):
        colour = (150, 150, 150) if label == "relative prefill" else palette[i % len(palette)]
        coords = [xy(b, v) for b, v in points]
        if len(coords) > 1:
            draw.line(coords, fill=colour, width=2)
        for x, y in coords:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.rectangle([left + plot_w + 12, legend_y, left + plot_w + 24, legend_y + 12], fill=colour)
        draw.text((left + plot_w + 28, legend_y), label, fill="black")
        legend_y += 18
    draw.text((left + plot_w + 28, legend_y), f"--- target {report['target']:g}", fill="black")
    if report["chosen"]:
        x, _ = xy(report["chosen"]["budget"], 0)
        draw.line([x, top, x, top + plot_h], fill=(219, 68, 55))
        draw.text((x + 4, top + 4), f"chosen {report['chosen']['budget']:g}", fill=(219, 68, 55))
    if "measure" in report:
        x, y = xy(report["measure"]["budget"], report["measure"]["ttft_ratio"])
        draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=(219, 68, 55))
        draw.text((left + plot_w + 28, legend_y + 18), "red dot: measured TTFT ratio", fill="black")
    img.save(path)
    return path


def measure_ttft(opts: CalibrateOptions, report: dict, step: Callable[[str], None]) -> dict:
    """The chosen budget and the unreduced model exported to ONNX and timed (``edgetrim.runtime.vlm_bench``)."""
    from edgetrim.export.build import export
    from edgetrim.runtime.vlm_bench import bench_vlm

    chosen, roots = report["chosen"], []
    for budget, method, name in (("1.0", "none", "unreduced"), (str(chosen["budget"]), "hired", "chosen")):
        folder = opts.out / "artifacts" / f"{name}-{budget}"
        if not (folder / contract.MANIFEST).is_file():
            step(f"export budget {budget} to onnx")
            export(
                ExportOptions(
                    target=contract.ONNX,
                    model=opts.model,
                    out=folder,
                    with_llm=True,
                    reduce=method,
                    budget=budget,
                    alpha=chosen["alpha"],
                    grid=opts.grid,
                    image_size=opts.image_size,
                    feature_layer=opts.feature_layer,
                ),
                step=step,
            )
        roots.append(folder)
    meta = {"model": report["model"], "target": contract.ONNX, "random_weights": report["random_weights"]}
    bench = bench_vlm(roots, opts.out / "measure", MEASURE_TOKENS, 1, meta, step)
    full, reduced = sorted(bench["rows"], key=lambda r: -r["visual_tokens"])
    return {
        "target": contract.ONNX,
        "budget": chosen["budget"],
        "new_tokens": MEASURE_TOKENS,
        "ttft_ms": reduced["ttft_ms"],
        "unreduced_ttft_ms": full["ttft_ms"],
        "ttft_ratio": reduced["ttft_ms"] / full["ttft_ms"],
        "files": bench["files"],
    }


def load_model(opts: CalibrateOptions, kind: str, scratch: Path) -> tuple[VisionTower, vlm.VlmSource | None]:
    """The tower, and for a VLM the whole source (language model, tokenizer, template)."""
    spec = opts.model_spec
    if kind == contract.VLM:
        load = vlm.load_preset if spec in VLM_PRESETS else None
        src = load(spec, scratch, opts.feature_layer) if load else vlm.load_folder(spec, opts.feature_layer)
        return src.tower, src
    return load_tower(spec, opts.feature_layer), None


def calibrate(
    opts: CalibrateOptions,
    step: Callable[[str], None] = lambda name: None,
    advance: Callable[[int, int], None] = lambda done, total: None,
    source: tuple[VisionTower, vlm.VlmSource | None] | None = None,
) -> dict:
    """Measure every candidate on the calibration set, choose, write the report files; returns the report.

    ``source`` (tower, VLM source or None): an already loaded model in place of ``opts.model``.
    """
    if source is None:
        kind = kind_of(opts.model_spec, opts.with_llm)
    else:
        kind = contract.VLM if source[1] is not None else contract.VISION_ENCODER
    metric = check_request(opts, kind)
    fractions = parse_fractions(opts.budgets or DEFAULT_BUDGETS, "budgets")
    alphas = parse_fractions(opts.alphas or DEFAULT_ALPHAS, "alphas", allow_zero=True)
    calib = calibration_set(opts.calib_images, opts.calib_prompts if kind == contract.VLM else None)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgetrim-calibrate-") as scratch:
        step("load model")
        tower, src = source or load_model(opts, kind, Path(scratch))
        geometry = vision.reduction_plan(
            tower, ExportOptions(target=contract.ONNX, reduce="none", grid=opts.grid, image_size=opts.image_size), kind
        )
        p, n = geometry.partitions, tower.side**2
        budgets = [(b, a, resolve_budget(b, p, n, a)) for b in fractions for a in alphas]
        language = LanguageSide.of(src) if src is not None else None
        step(f"measure {len(budgets)} candidates on {len(calib.images)} images")
        passes = VisionPasses(tower, geometry)
        figures, text_tokens = measure_items(
            passes, calib, [b for _, _, b in budgets], language, opts.greedy_tokens, advance
        )
    metrics = VLM_METRICS if kind == contract.VLM else VISION_METRICS
    rows = candidate_rows(budgets, figures, metrics, text_tokens, metric, opts.target_fidelity)
    random_weights = tower.source.random_weights
    report = {
        "model": tower.source.name,
        "kind": kind,
        "random_weights": random_weights,
        "note": RANDOM_NOTE if random_weights else "",
        "calibration": calib.describe(),
        "images": len(calib.images),
        "prompts": len(calib.prompts) if kind == contract.VLM else 0,
        "items": len(next(iter(figures.values()))),
        "geometry": {
            "grid": list(geometry.grid),
            "image_size": tower.image_size,
            "partitions": p,
            "tokens_per_partition": n,
        },
        "metric": metric,
        "metrics": list(metrics),
        "target": opts.target_fidelity,
        "greedy_tokens": opts.greedy_tokens if kind == contract.VLM else None,
        "candidates": rows,
        "chosen": choose(rows, figures, budgets, metric, opts.target_fidelity),
        "vision_passes": passes.passes,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    report["confidence"] = confidence(report)
    if opts.measure and report["chosen"]:
        report["measure"] = measure_ttft(opts, report, step)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    report["files"] = [str(out / name) for name in (REPORT_JSON, REPORT_MD, PLOT_PNG)]
    write_json(out / REPORT_JSON, report)
    (out / REPORT_MD).write_text(markdown(report))
    plot_png(report, out / PLOT_PNG)
    return report
