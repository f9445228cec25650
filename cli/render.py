"""What the ``edgetrim`` command prints: progress on stderr, summary tables on stdout, errors in one line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from edgetrim.runtime import contract
from edgetrim.runtime.genai_bench import ENGINE as GENAI
from edgetrim.runtime.vlm_bench import target_label, variant_label

console = Console(stderr=False, highlight=False)
errors = Console(stderr=True, highlight=False)
RANDOM = "random (seeded preset): outputs are meaningless; shapes, timings and memory are those of the real model"
MEANINGLESS_TEXT = "random (seeded preset): the generated text is meaningless"


def error(message: str) -> None:
    errors.print(f"error: {message}", markup=False, soft_wrap=True)


@contextmanager
def progress() -> Iterator[tuple]:
    """(show(description), advance(done, total)): a spinner, or a bar with the time left once a total is known;
    off when stderr is not a terminal (rich would leave blank lines there)."""
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=errors, transient=True, disable=not errors.is_terminal) as p:
        task = p.add_task("starting", total=None)

        def advance(done: int, total: int) -> None:
            p.update(task, description="running", completed=done, total=total)

        yield (lambda name: p.update(task, description=name)), advance


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def facts(title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def validation_line(v: dict) -> str:
    if v["status"] == "passed":
        return (
            f"passed on {len(v['cases'])} checks through the runtime: max abs error {v['max_abs_error']:.2e} "
            f"(atol {v['atol']:g}), integer outputs (positions, budgets, tokens) identical"
        )
    if v["status"] == "fidelity":
        return f"fidelity vs the float model: {v['note']}"
    if v["status"] == "spec-only":
        return f"spec checked; {v['note']}"
    return "skipped (--no-validate)"


def quantized_chunks(r: dict) -> str:
    """``encoder int8-dynamic, prefill_00-01 int4-dynamic, ...``: each chunk's quantization as written."""
    return ", ".join(f"{c['name']} {c['quantization']}" for c in r["chunks"] if c.get("quantization"))


def export_summary(r: dict) -> None:
    weights = RANDOM if r["random_weights"] else "from checkpoint"
    rows = [("model", f"{r['model']}  (weights: {weights})"), ("kind", r["kind"])]
    rows.append(("target", f"{r['target']} ({r['precision']})"))
    quant = r.get("quantization", {"mode": "none"})
    if quant["mode"] != "none":
        calib = quant["calibration"]
        if "summary" in calib:  # seeded gate inputs (video denoiser), no calibration set
            described = calib["summary"]
        else:
            skipped = f", {len(calib['skipped'])} unreadable skipped" if calib["skipped"] else ""
            described = f"{calib['images']} images, {calib['prompts']} prompts{skipped}, sha256 {calib['sha256'][:12]}"
        rows.append(
            ("quantization", f"{quant['mode']} ({quantized_chunks(r)}); calibration {calib['source']}: {described}")
        )
    if "tokens" in r:
        rows.append(
            (
                "tokens kept K",
                f"{r['tokens']} of {r['available_tokens']} ({r['kept_fraction']:.1%}) "
                f"over {r['partitions']} partitions",
            )
        )
    if "calibration" in r:
        c = r["calibration"]
        rows.append(
            (
                "budget auto",
                f"{c['budget']} (alpha {c['alpha']}) from {c['report']}: mean {c['metric']} {c['achieved']:.4f} >= "
                f"{c['target']} over {c['items']} items (worst {c['worst_item']:.4f})",
            )
        )
    if "llm_layers" in r:
        rows.append(
            (
                "language model",
                f"{r['llm_layers']} layers, prefill lengths {', '.join(map(str, r['prefill_lengths']))} "
                f"(one copy of the weights with decode), KV cache L {r['max_length']}"
                + (" as Core ML state (iOS 18)" if r.get("kv_cache") == contract.KV_STATE else ""),
            )
        )
    if "latent_shape" in r:
        rows.append(("latent", f"{r['latent_shape']} -> {r['tokens_per_frame']} tokens per frame"))
        rows.append(("FLOPs", f"TDTM depth step / plain = {r['flops_ratio_depth_step']:.3f}"))
        rows.append(
            (
                "size",
                f"{human_bytes(r['artifact_bytes'])} with plain + tdtm vs {human_bytes(r['one_variant_bytes'])} "
                f"plain only: {r['two_variant_ratio']:.3f}x ({r['size_note']})",
            )
        )
    if "decoder" in r:
        d = r["decoder"]
        size = "x".join(map(str, d["pixel_size"]))
        rows.append(("latent", f"{d['latent_shape']} -> {d['pixel_frames']} frames of {size} (height x width)"))
        rows.append(("invocations", decoder_plan(d["plan"])))
    if "max_length" in r and "llm_layers" not in r:
        rows.append(("max length", f"{r['max_length']} caption tokens"))
    rows.append(("validation", validation_line(r["validation"])))
    rows.append(("artifact", f"{r['artifact']}  ({human_bytes(r['artifact_bytes'])})"))
    if len(r["chunks"]) > 1:
        rows.append(("chunks", ", ".join(f"{c['name']} {human_bytes(c['bytes'])}" for c in r["chunks"])))
    rows.append(("time", ", ".join(f"{k.removesuffix('_s')} {t:.1f}s" for k, t in r["timings_s"].items())))
    for stale in r["removed_stale"]:
        rows.append(("cleaned", f"{stale} (left by an export that died)"))
    facts("edgetrim export", rows)


def decoder_plan(plan: list[dict]) -> str:
    """``temporal 4 x 5 latent frames -> 17 frames, spatial 17 x 4 frames``: a video decoder's host loop."""
    steps = []
    for step in plan:
        if "latent_frames" in step:
            what = f"{step['latent_frames']} latent frames -> {step['pixel_frames']} frames"
        else:
            padding = f" ({step['padding_frames']} padding)" if step["padding_frames"] else ""
            what = f"{step['frames']} frames{padding}"
        steps.append(f"{step['pipeline']} {step['invocations']} x {what}")
    return ", ".join(steps)


def graph_cache_line(counts: dict[str, int]) -> str:
    """How the ONNX programs opened: from this machine's optimized-graph cache, optimized now, or as saved."""
    said = {"hit": "from the optimized-graph cache", "miss": "optimized now and cached", "off": "opened as saved"}
    return ", ".join(f"{counts[k]} {said[k]}" for k in said if counts.get(k))


def verify_row(s: dict) -> list[tuple[str, str]]:
    """How the run's open checked the files: hashed now, or unchanged since a stamped verification."""
    return [("verify", s["verify"].describe())] if s.get("verify") else []


def run_summary(root: Path, kind: str, s: dict, opts) -> None:
    if kind == contract.VISION_ENCODER:
        m = s["manifest"]
        available = m["reduction"]["available_tokens"]
        rows = [
            ("model", f"{m['source']['name']}  (weights: {RANDOM if m['source']['random_weights'] else 'checkpoint'})"),
            ("target", m["target"]),
            *verify_row(s),
            ("chunks", s["plan"]),
            *([("onnx graphs", graph_cache_line(s["graph_cache"]))] if s["graph_cache"] else []),
            ("tokens K", f"{s['tokens']} of {available} ({s['tokens'] / available:.1%})"),
            ("per partition", " ".join(map(str, s["partition_budgets"])) + "  (full view, cells)"),
            ("token shape", str(s["token_shape"])),
            ("timings", ", ".join(f"{n.removesuffix('_ms')} {v:.1f} ms" for n, v in s["timings_ms"].items())),
        ]
        rows += [("wrote", ", ".join(s["written"]))] if s["written"] else []
        facts(f"edgetrim run {root}", rows)
    elif kind == contract.VLM:
        console.print()
        m, result = s["manifest"], s["result"]
        t, gen = result.timings_ms, result.generation
        weights = MEANINGLESS_TEXT if m["source"]["random_weights"] else "checkpoint"
        rows = [
            ("model", f"{m['source']['name']}  (weights: {weights})"),
            ("target", m["target"]),
            *verify_row(s),
            (
                "visual tokens K",
                f"{result.visual_tokens} of {m['reduction']['available_tokens']} "
                f"({m['reduction']['kept_fraction']:.1%})",
            ),
            (
                "prompt",
                f"{result.prompt_tokens} tokens (visual included), prefilled at {result.generation.prefill_length} "
                f"of P {m['llm']['prefill_length']}",
            ),
            ("generated", f"{len(result.tokens)} tokens"),
            (
                "timings",
                f"preprocess {t['preprocess_ms']:.1f} ms, vision {t['vision_ms']:.1f} ms, "
                f"prefill {t['prefill_ms']:.1f} ms",
            ),
            ("TTFT", f"{t['ttft_ms']:.1f} ms (image in -> first token)"),
            ("decode", f"{gen.decode_tokens_per_s:.1f} tokens/s ({len(gen.step_s)} steps)"),
            ("load", ", ".join(f"{k.removesuffix('_ms')} {v:.0f} ms" for k, v in s["load_ms"].items())),
        ]
        rows += [("memory", f"per pipeline within {opts.memory_budget_mb:g} MB: {s['plan']}")] if s["plan"] else []
        facts(f"edgetrim run {root}", rows)
    elif kind == contract.LANGUAGE_MODEL:
        console.print()
        gen = s["generation"]
        rows = [
            *verify_row(s),
            ("prompt", f"{s['prompt_tokens']} tokens, prefilled at {gen.prefill_length}"),
            ("generated", f"{len(gen.tokens)} tokens"),
            ("TTFT", f"{gen.ttft_s * 1e3:.1f} ms"),
            ("decode", f"{gen.decode_tokens_per_s:.1f} tokens/s"),
        ]
        facts(f"edgetrim run {root}", rows)
    elif kind == contract.VIDEO_DENOISER:
        m, result = s["manifest"], s["result"]
        tdtm = result.functions.count(contract.TDTM)
        if result.leap_step is None:
            leap = "no leap"
        else:
            leap = f"leapt at step {result.leap_step} ({'adaptive LPL' if s['adaptive'] else 'fixed'})"
        per_function = {
            f: [ms for ms, g in zip(result.step_ms, result.functions, strict=True) if g == f]
            for f in (contract.TDTM, contract.PLAIN)
        }
        per_step = ", ".join(f"{f} {sum(v) / len(v):.0f} ms" for f, v in per_function.items() if v)
        rows = [
            ("model", f"{m['source']['name']}  (weights: {RANDOM if m['source']['random_weights'] else 'checkpoint'})"),
            ("target", f"{m['target']}; chunks: {s['plan']}"),
            *verify_row(s),
            ("caption", s["caption"]),
            ("latent", f"{list(result.latent.shape)} ({m['video']['tokens_per_frame']} tokens per frame)"),
            ("steps", f"{result.steps_run} of {s['steps']} run: {tdtm} tdtm + {result.steps_run - tdtm} plain; {leap}"),
            ("time per step", f"{per_step} (mean), total {sum(result.step_ms) / 1e3:.1f} s"),
        ]
        record, stages = s["record"], s["record"]["stages"]
        if "video" in record:
            shape = record["video"]["frames_shape"]
            rows.append(("video", f"{shape[0]} frames of {shape[2]}x{shape[1]} at {record['video']['fps']:g} fps"))
            rows += [("note", record["video"]["note"])] if "note" in record["video"] else []
        rows += [
            (
                "stages",
                "; ".join(f"{r['stage']} {r['ms'] / 1e3:.1f} s, peak {r['peak_rss_mb']:.0f} MB" for r in stages)
                + ("" if record["peak_rss"] == "per stage" else " (running peak)"),
            ),
            ("wrote", ", ".join(s["written"])),
        ]
        facts(f"edgetrim run {root}", rows)
    elif kind == contract.VIDEO_DECODER:
        m, result, record = s["manifest"], s["result"], s["record"]
        slowest = sorted(result.stage_ms.items(), key=lambda kv: -kv[1]["compute_ms"])[:3]
        rows = [
            ("model", f"{m['source']['name']}  (weights: {RANDOM if m['source']['random_weights'] else 'checkpoint'})"),
            ("target", m["target"]),
            *verify_row(s),
            (
                "latent",
                f"{record['latent_shape']} -> {record['frames_shape'][0]} frames of "
                f"{record['frames_shape'][2]}x{record['frames_shape'][1]} at {record['fps']:g} fps",
            ),
            ("invocations", decoder_plan(m["decoder"]["plan"])),
            ("chunks", "; ".join(f"{p}: {d}" for p, d in result.memory.items())),
            (
                "time",
                f"{result.total_ms:.0f} ms; slowest "
                + ", ".join(f"{name} {row['compute_ms']:.0f} ms ({row['invocations']}x)" for name, row in slowest),
            ),
            *([("note", record["note"])] if record["note"] else []),
            ("wrote", ", ".join(s["written"])),
        ]
        facts(f"edgetrim run {root}", rows)
    else:
        rows = [
            *verify_row(s),
            ("prompt", repr(opts.prompt_text)),
            ("tokens", f"{s['tokens']} of {s['length']}"),
            ("embeddings", str(s["shape"])),
            ("wrote", ", ".join(s["written"])),
        ]
        facts(f"edgetrim run {root} (text encoder)", rows)


def goals_line(goals: dict) -> str:
    return "goals: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in goals.items())


def load_summary(report: dict) -> None:
    table = Table(
        title=f"edgetrim bench --onnx-load {report['artifact']} (onnxruntime {report['onnxruntime']}, CPU, "
        f"median of {report['rounds']}; ms)",
        title_justify="left",
    )
    table.add_column("program", no_wrap=True)
    for col in ("cold load", "cached load", "pre-opt load", "cached run", "pre-opt run"):
        table.add_column(col, justify="right")
    for label, p in {**report["programs"], "total": report["totals"]}.items():
        table.add_row(
            label,
            *(f"{p[k]:.1f}" for k in ("cold_load_ms", "cached_load_ms", "preoptimized_load_ms")),
            *(f"{p[k]:.2f}" for k in ("cached_run_ms", "preoptimized_run_ms")),
        )
    console.print(table)
    r = report["ratios"]
    console.print(
        f"vs pre-optimized: cold load {r['cold_load_vs_preoptimized']:.2f}x, cached load "
        f"{r['cached_load_vs_preoptimized']:.2f}x, run {r['cached_run_vs_preoptimized']:.2f}x"
    )
    if report["random_weights"]:
        console.print("weights: random (seeded preset); timings are those of the real shapes")
    console.print("wrote " + ", ".join(report["files"]))


def bench_summary(kind: str, report: dict) -> None:
    meta = report["meta"]
    if kind == contract.VLM:
        rows = report["rows"]
        label = target_label(meta)
        table = Table(
            title=f"edgetrim bench {meta['model']} ({label}, {meta['max_new_tokens']} new tokens, median of "
            f"{meta['runs']})",
            title_justify="left",
        )
        cols = ("variant", "K", "size MB", "vision ms", "prefill ms", "TTFT ms", "vs base", "decode tok/s", "peak MB")
        for col in (*cols, "vs base"):
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(
                variant_label(r),
                str(r["visual_tokens"]),
                f"{r['artifact_bytes'] / 2**20:.0f} ({r['bytes_ratio']:.2f}x)",
                f"{r['vision_ms']:.0f}",
                f"{r['prefill_ms']:.0f}",
                f"{r['ttft_ms']:.0f}",
                f"{r['ttft_ratio']:.2f}x",
                f"{r['decode_tokens_per_s']:.1f} ({r['decode_ratio']:.2f}x)",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['peak_rss_ratio']:.2f}x",
            )
        console.print(table)
        for g in (r for r in rows if r["engine"] == GENAI):
            agree = "agree" if g["greedy_agree"] else f"agree for {g['greedy_common_prefix']} of {len(g['tokens'])}"
            console.print(
                f"{g['vs_ours']} / {variant_label(g)} (onnxruntime-genai {g['onnxruntime_genai']}, same prompt): "
                f"decode tok/s {g['ours_over_genai_decode']:.2f}x, prefill {g['ours_over_genai_prefill']:.2f}x, "
                f"peak RSS {g['ours_over_genai_peak_rss']:.2f}x; greedy tokens {agree}"
            )
        if report["goals"]:
            console.print(goals_line(report["goals"]))
    elif kind == contract.VIDEO_DENOISER:
        table = Table(title=f"edgetrim bench {meta['artifact']} ({meta['target']}, video)", title_justify="left")
        for col in ("measurement", "baseline", "candidate", "ratio", "reference", "goal"):
            table.add_column(col, justify="left" if col == "measurement" else "right")
        for r in report["rows"]:
            table.add_row(
                r["measurement"], r["baseline"], r["candidate"], f"{r['ratio']:.3f}x", r["reference"], r["goal"]
            )
        console.print(table)
        if "legend" in meta:
            console.print(meta["legend"])
        if report["goals"]:
            console.print(goals_line(report["goals"]))
    else:
        summary, results = report["summary"], report["results"]
        table = Table(
            title=f"edgetrim bench {meta['artifact']} ({meta['target']}, {summary['chunks']} chunks, "
            f"budget {meta['budget_mb']:.0f} MB)",
            title_justify="left",
        )
        latency = f"latency ms (x{meta['repeats']})"
        for col in ("mode", "first call ms", latency, "vs resident", "peak RSS MB", "vs resident"):
            table.add_column(col, justify="right")
        base = results["resident"]
        for mode, r in results.items():
            table.add_row(
                mode,
                f"{r['first_invocation_ms']:.0f}",
                f"{r['latency_ms']:.0f}",
                f"{r['latency_ms'] / base['latency_ms']:.2f}x",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}x",
            )
        console.print(table)
        console.print(
            f"load hidden behind compute: {summary['load_overlap_fraction']:.0%} (timeline overlap), "
            f"{summary['load_hidden_fraction']:.0%} (latency vs naive); " + goals_line(summary["goals"])
        )
    if meta["random_weights"]:
        console.print("weights: random (seeded preset); timings and memory are those of the real shapes")
    console.print("wrote " + ", ".join(report["files"]))


def calibrate_summary(report: dict) -> None:
    """The candidates' table (each metric's mean / min over items) and the choice with its confidence."""
    metrics, chosen = report["metrics"], report["chosen"]
    calib = report["calibration"]
    table = Table(
        title=f"edgetrim calibrate {report['model']} ({report['kind']}, {report['items']} items, target mean "
        f"{report['metric']} >= {report['target']})",
        title_justify="left",
    )
    for col in ("budget", "alpha", "K", "rel. prefill", *(f"{m} mean/min" for m in metrics), "meets"):
        table.add_column(col, justify="right")
    for r in report["candidates"]:
        picked = chosen is not None and (r["budget"], r["alpha"]) == (chosen["budget"], chosen["alpha"])
        table.add_row(
            f"{r['budget']:g}",
            f"{r['alpha']:g}",
            str(r["tokens"]),
            f"{r['relative_prefill']:.3f}",
            *(f"{r['metrics'][m]['mean']:.3f}/{r['metrics'][m]['min']:.3f}" for m in metrics),
            "chosen" if picked else "yes" if r["meets_target"] else "no",
        )
    console.print(table)
    skipped = f", {len(calib['skipped'])} unreadable skipped" if calib["skipped"] else ""
    console.print(
        f"calibration set {calib['source']}: {calib['images']} images{skipped}, sha256 {calib['sha256'][:12]}; "
        f"vision passes {report['vision_passes']} (one per image), {report['seconds']:.1f}s"
    )
    console.print(("chosen: " if chosen else "") + report["confidence"])
    if "measure" in report:
        m = report["measure"]
        console.print(
            f"measured ({m['target']}): TTFT {m['ttft_ms']:.0f} ms vs {m['unreduced_ttft_ms']:.0f} ms unreduced "
            f"({m['ttft_ratio']:.2f}x)"
        )
    if report["random_weights"]:
        console.print(f"weights: {report['note']}")
    console.print("wrote " + ", ".join(report["files"]))


def presets_table(presets: dict, default: str) -> None:
    """Every preset: name, kind, what it is; names never cut (80 columns and up)."""
    table = Table(title="presets (real shapes, seeded random weights)", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("what", overflow="fold")
    for name, p in presets.items():
        table.add_row(name + (" *" if name == default else ""), p.kind, p.description)
    console.print(table)
    console.print(f"* default --model ({default})")
