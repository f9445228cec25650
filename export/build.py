"""``export``: the one build driver, the same for every artifact kind and target.

model -> kind (``presets.kind_of``) -> the kind's plan (stages with example inputs from one reference
run, pipelines, manifest sections, data files, checks) -> staging folder -> the target writes every
chunk (``{function: stage}``) -> data files -> manifest -> one validator, through the runtime ->
report -> rename into ``out``. Nothing is left looking complete when a step fails.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edgetrim.export.kinds import language_model, text, video, video_decoder, vision, vlm
from edgetrim.export.kinds.base import Plan
from edgetrim.export.options import ExportOptions, check_applicable, check_common
from edgetrim.export.presets import kind_of
from edgetrim.export.staging import check_out_dir, clean_stale, staging
from edgetrim.export.targets import target_module
from edgetrim.export.targets.base import io_spec
from edgetrim.export.validate import Validation, validate
from edgetrim.runtime import contract
from edgetrim.runtime.manifest import file_entry, manifest_header, write_json

PLANNERS: dict[str, Callable[[ExportOptions, Path], Plan]] = {
    contract.VISION_ENCODER: vision.plan,
    contract.VLM: vlm.plan,
    contract.LANGUAGE_MODEL: language_model.plan,
    contract.VIDEO_DENOISER: video.plan,
    contract.TEXT_ENCODER: text.plan,
    contract.VIDEO_DECODER: video_decoder.plan,
}
OUT_TAG = {  # default folder: artifacts/<model>-<tag>-<target>
    contract.VISION_ENCODER: "hired",
    contract.VLM: "vlm",
    contract.LANGUAGE_MODEL: "lm",
    contract.VIDEO_DENOISER: "video",
    contract.TEXT_ENCODER: "text",
    contract.VIDEO_DECODER: "decoder",
}


def default_out(opts: ExportOptions, kind: str) -> Path:
    tag = opts.value("reduce", kind) if kind == contract.VISION_ENCODER else OUT_TAG[kind]
    return Path("artifacts") / f"{Path(opts.model_spec).name}-{tag}-{opts.target}"


def write_chunks(plan: Plan, folder: Path, target: str, step: Callable[[str], None]) -> list[dict]:
    """Every chunk through the target; returns the manifest's chunk entries."""
    writer = target_module(target)
    entries = []
    for i, chunk in enumerate(plan.chunks):
        step(f"export {target} ({plan.precision}) chunk {i + 1}/{len(plan.chunks)}: {chunk.name}")
        stem = "model" if len(plan.chunks) == 1 else f"{i:02d}-{chunk.name}"
        fp16 = plan.precision == "fp16"
        separate = {"separate": True} if chunk.coreml_ios17 and target == contract.COREML else {}
        separate |= {"tied": chunk.tied} if chunk.tied is not None and target == contract.ONNX else {}
        written = writer.write(chunk.functions, chunk.example, folder, stem, fp16, chunk.quantize, **separate)
        examples = chunk.examples()
        io = {}
        for function, stage in chunk.functions.items():
            inputs, outputs = io_spec(stage, examples[function], target)
            io[function] = {"inputs": inputs, "outputs": outputs}
        first = next(iter(io.values()))
        entry = {"name": chunk.name, "files": [file_entry(folder, f, role) for f, role in written.files]} | first
        if len(chunk.functions) > 1:  # functions of other inputs / outputs than the first's list their own
            same = all(spec == first for spec in io.values())
            entry["functions"] = {f: e | ({} if same else io[f]) for f, e in written.functions.items()}
        entries.append(entry | written.extra)
    return entries


def export(opts: ExportOptions, step: Callable[[str], None] = lambda name: None) -> dict:
    """Build, validate and write one artifact; ``step(name)`` is called as each step starts. Returns the report."""
    check_common(opts)
    if opts.out:
        check_out_dir(Path(opts.out))  # refuse a foreign folder before loading the model, not after
    kind = kind_of(opts.model_spec, opts.with_llm)
    check_applicable(opts, kind)
    out = Path(opts.out) if opts.out else default_out(opts, kind)
    removed = clean_stale(out)
    timings: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        timings[name] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()

    step("load model")
    with tempfile.TemporaryDirectory(prefix="edgetrim-scratch-") as scratch:
        plan = PLANNERS[kind](opts, Path(scratch))
        lap("load_s")
        with staging(out) as tmp:
            entries = write_chunks(plan, tmp, opts.target, step)
            files = []
            for data in plan.data_files:
                data.write(tmp / data.name)
                files.append(file_entry(tmp, tmp / data.name, data.role))
            lap("export_s")
            source = plan.source.to_dict() | plan.source_extra
            manifest = manifest_header(kind, opts.target, plan.precision, source) | plan.sections
            manifest |= {"chunks": entries, "pipelines": plan.pipelines}
            manifest |= {"files": files} if files else {}
            manifest["export_options"] = opts.recorded(kind, source["name"])
            write_json(tmp / contract.MANIFEST, manifest)
            step("validate")
            if opts.validate:
                validation = validate(tmp, plan.checks(tmp), opts.atol)
            else:
                validation = Validation("skipped", None, opts.atol, note="validation off")
            lap("validate_s")
            all_files = [f for e in entries for f in e["files"]] + files
            report = {
                "artifact": str(out),
                "kind": kind,
                "target": opts.target,
                "precision": plan.precision,
                "model": source["name"],
                "random_weights": source["random_weights"],
                "chunks": [
                    {"name": e["name"], "bytes": sum(f["bytes"] for f in e["files"])}
                    | ({"quantization": e["quantization"]} if "quantization" in e else {})
                    for e in entries
                ],
                "artifact_bytes": sum(f["bytes"] for f in all_files),
                **plan.summary,
                **plan.after_write(tmp, manifest),
                "validation": validation.to_dict(),
                "timings_s": timings,
                "removed_stale": [str(p) for p in removed],
            }
            write_json(tmp / contract.REPORT, report)
    return report
