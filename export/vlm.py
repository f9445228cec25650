"""Whole-VLM export: HiRED vision chunks + language-model prefill/decode chunks in one artifact.

One staged folder, one manifest (``kind: vlm``): pipelines ``vision`` (pixels -> K visual tokens in
the LLM's embedding space), ``prefill`` and ``decode`` (static KV cache, ``edgetrim.export.llm``),
top-level files ``embedding`` (the token table) and ``tokenizer`` (+ its config files), and the
``llm`` section: dims, P = K + text budget, L = P + new-token budget, the prompt template, the
image token id and the stop ids. Validation: the vision chunks vs PyTorch (as for vision
artifacts), then the whole runtime pipeline vs the transformers language model fed the PyTorch
HiRED tokens: first-token logits and the first greedy tokens.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgetrim.export.artifact import check_out_dir, file_entry, staging, write_json
from edgetrim.export.graph import ReducedVisionEncoder
from edgetrim.export.llm import LanguageModel, load_causal_lm, write_llm
from edgetrim.export.llm_presets import IMAGE_TOKEN, SEED_LLM, VLM_PRESETS, build_byte_tokenizer, random_causal_lm
from edgetrim.export.loading import LLAVA_TYPES, load_tower, read_config
from edgetrim.export.pipeline import (
    SUFFIX,
    VERSION,
    ExportOptions,
    build_plan,
    check_options,
    chunk_exports,
    chunk_layout,
    io_spec,
    preprocessing_manifest,
    reduction_manifest,
    write_chunk,
)
from edgetrim.export.presets import build_preset
from edgetrim.export.validate import Validation, ValidationFailed, reference_outputs, validate_coreml, validate_runtime
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.llm import load_tokenizer
from edgetrim.runtime.manifest import MANIFEST, SCHEMA_VERSION
from edgetrim.runtime.vlm import check_template, prompt_ids

# text model_type -> the LLaVA chat template of that family (override with --template)
TEMPLATES = {
    "qwen2": VLM_PRESETS["tiny-vlm"].template,
    "llama": "USER: <image>\n{prompt} ASSISTANT:",
    "mistral": "[INST] <image>\n{prompt} [/INST]",
}
TOKENIZER_FILES = {  # copied from a model folder when present; tokenizer.json is required
    "tokenizer.json": "tokenizer",
    "tokenizer_config.json": "tokenizer_config",
    "special_tokens_map.json": "special_tokens_map",
}
VALIDATION_PROMPT = "Describe the image in one sentence."
VALIDATION_TOKENS = 4


@dataclass
class VlmOptions:
    """``vision``: the vision export options (target, model, budget, grid, chunks ...); the rest is the LLM's."""

    vision: ExportOptions
    template: str | None = None  # None: the preset's / model family's
    prefill_length: int | None = None  # P; None: K + text_tokens
    max_length: int | None = None  # L; None: P + new_tokens
    text_tokens: int = 64
    new_tokens: int = 64
    llm_chunks: int = 1  # layer groups per LLM graph
    vision_int8: bool = False  # ONNX: dynamic int8 weight MatMuls in the vision chunks (fidelity-checked)


@dataclass
class VlmSource:
    """What ``--model`` resolved to: tower, causal LM, tokenizer folder, template, special ids."""

    tower: object
    model: torch.nn.Module
    tokenizer_dir: Path
    template: str
    image_token_id: int
    eos_token_ids: list[int]
    random_weights: bool
    description: dict = field(default_factory=dict)


def is_vlm_preset(spec: str | None) -> bool:
    return spec in VLM_PRESETS


def load_preset(name: str, scratch: Path, feature_layer: int | None) -> VlmSource:
    if feature_layer is not None:
        raise UserError("--feature-layer applies to checkpoint folders; presets fix their feature layer")
    preset = VLM_PRESETS[name]
    tower = build_preset(name, preset.vision)
    config = preset.text_config()
    model = random_causal_lm(config, seed=SEED_LLM, std=preset.weight_std)
    build_byte_tokenizer(scratch)
    tok = load_tokenizer(scratch)
    eos = [tok.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>")]
    return VlmSource(
        tower, model, scratch, preset.template, tok.token_to_id(IMAGE_TOKEN), eos, True, {"text": config.model_type}
    )


def load_folder(spec: str, feature_layer: int | None) -> VlmSource:
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise UserError(f"model folder {spec} does not exist: --with-llm needs a local LLaVA folder or a VLM preset")
    cfg = read_config(folder)
    if cfg.get("model_type") not in LLAVA_TYPES:
        raise UserError(
            f"{folder} is a {cfg.get('model_type')!r} checkpoint: --with-llm needs a LLaVA / LLaVA-NeXT / "
            "LLaVA-OneVision folder (drop --with-llm to export a vision encoder)"
        )
    if not (folder / "tokenizer.json").is_file():
        raise UserError(
            f"{folder} has no tokenizer.json: save the tokenizer into the model folder "
            "(processor.save_pretrained / tokenizer.save_pretrained) and export again"
        )
    tower = load_tower(str(folder), feature_layer)
    model = load_causal_lm(folder)
    text = model.config
    image_token = cfg.get("image_token_index", cfg.get("image_token_id"))
    if image_token is None:
        raise UserError(f"{folder}/config.json has no image_token_index: re-save the LLaVA model")
    eos = text.eos_token_id if isinstance(text.eos_token_id, list) else [text.eos_token_id]
    return VlmSource(
        tower,
        model,
        folder,
        TEMPLATES.get(text.model_type, ""),
        int(image_token),
        [int(e) for e in eos if e is not None],
        False,
        {"text": text.model_type},
    )


def resolve_lengths(opts: VlmOptions, k: int, template_tokens: int) -> tuple[int, int]:
    """(P, L): P = K + text budget unless given; L = P + new-token budget unless given."""
    p = opts.prefill_length if opts.prefill_length is not None else k + opts.text_tokens
    if p < k + template_tokens:
        raise UserError(
            f"--prefill-length {p} cannot hold the {k} visual tokens and the {template_tokens}-token template: "
            f"pass at least {k + template_tokens + 16}"
        )
    length = opts.max_length if opts.max_length is not None else p + opts.new_tokens
    if length <= p:
        raise UserError(f"--max-length {length} leaves no room to generate after the prefill of {p}: pass more")
    return p, length


def check_tokenizer(tok, vocab: int, tokenizer_dir: Path) -> None:
    if tok.get_vocab_size(with_added_tokens=True) > vocab:
        raise UserError(
            f"{tokenizer_dir}/tokenizer.json has {tok.get_vocab_size()} tokens, more than the model's vocabulary "
            f"{vocab}: the tokenizer does not belong to this model"
        )


def copy_tokenizer(src: Path, root: Path) -> list[dict]:
    entries = []
    for name, role in TOKENIZER_FILES.items():
        if (src / name).is_file():
            shutil.copyfile(src / name, root / name)
            entries.append(file_entry(root, root / name, role))
    return entries


def validate_llm(
    root: Path, module: ReducedVisionEncoder, model: torch.nn.Module, atol: float, own_visual: bool = False
) -> dict:
    """The runtime pipeline on a sample image vs the transformers LM fed the PyTorch HiRED tokens (same image).

    ``own_visual`` (int8 vision): the reference LM is fed the artifact's own visual tokens instead, so the
    check stays one of the language model. Reference embeddings come from the artifact's table (float16
    on disk for big vocabularies), so both sides see the same text rows. Logits within
    atol * max(1, max |logit|); greedy tokens identical.
    """
    from edgetrim.calib.samples import sample_images
    from edgetrim.runtime.vlm import VlmPipeline

    pipeline = VlmPipeline(root)
    try:
        image = sample_images(1)[0]
        got = pipeline.generate(image, VALIDATION_PROMPT, VALIDATION_TOKENS)
        x = pipeline.pixel_values(image)
        vision_outputs = pipeline.vision.run({"pixel_values": x}) if own_visual else reference_outputs(module, x)
        visual = vision_outputs["tokens"][0]
        _, embeds = pipeline.embed_prompt(VALIDATION_PROMPT, visual)
        eos = set(pipeline.llm.get("eos_token_ids", []))
        table = pipeline.lm.table
    finally:
        pipeline.close()
    seq, expected, first = torch.from_numpy(embeds)[None], [], None
    with torch.no_grad():
        while len(expected) < VALIDATION_TOKENS and not (expected and expected[-1] in eos):
            logits = model(inputs_embeds=seq).logits[0, -1]
            first = logits.numpy() if first is None else first
            expected.append(int(logits.argmax()))
            seq = torch.cat([seq, torch.from_numpy(np.array(table[expected[-1]], np.float32))[None, None]], dim=1)
    err = float(np.abs(got.generation.first_logits - first).max())
    tol = atol * max(1.0, float(np.abs(first).max()))
    case = {
        "case": "sample-0 + prompt",
        "prompt_tokens": got.prompt_tokens,
        "first_logits_max_abs_error": err,
        "tolerance": tol,
        "tokens": got.tokens,
        "reference_tokens": expected,
        "passed": bool(err <= tol and got.tokens == expected),
    }
    if not case["passed"]:
        raise ValidationFailed(
            f"the language model differs from transformers: first-token logits max abs error {err:.2e} "
            f"(tolerance {tol:.2e}), tokens {got.tokens} vs {expected} - report an edgetrim bug"
        )
    return case


def export_vlm(opts: VlmOptions, step=lambda name: None) -> dict:
    """Export, validate and write the whole-VLM artifact; returns the report."""
    vopts = opts.vision
    grid, precision, budget = check_options(vopts)
    if opts.template is not None:
        check_template(opts.template)
    if opts.llm_chunks < 1:
        raise UserError(f"--llm-chunks {opts.llm_chunks} must be at least 1: layer groups per LLM graph")
    if opts.vision_int8 and vopts.target != "onnx":
        raise UserError(
            f"--vision-int8 is for --target onnx (ONNX Runtime's dynamic int8 MatMuls); "
            f"{vopts.target} vision chunks are {precision}: drop --vision-int8"
        )
    out = Path(vopts.out) if vopts.out else Path("artifacts") / f"{Path(str(vopts.model)).name}-vlm-{vopts.target}"
    check_out_dir(out)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    step("load model")
    with tempfile.TemporaryDirectory(prefix="edgetrim-tokenizer-") as scratch:
        if is_vlm_preset(vopts.model):
            src = load_preset(vopts.model, Path(scratch), vopts.feature_layer)
        else:
            src = load_folder(str(vopts.model), vopts.feature_layer)
        template = opts.template or src.template
        if not template:
            raise UserError(f"no chat template is known for a {src.description['text']} LLM: pass --template")
        check_template(template)
        tower = src.tower
        plan = build_plan(tower, vopts, grid, budget)
        k = plan.budget.total
        tok = load_tokenizer(src.tokenizer_dir)
        vocab = src.model.get_output_embeddings().out_features
        check_tokenizer(tok, vocab, src.tokenizer_dir)
        template_tokens = len(prompt_ids(tok, template, "", src.image_token_id)) - 1
        prefill_len, max_len = resolve_lengths(opts, k, template_tokens)
        lm = LanguageModel(src.model, max_len, prefill_len).eval()
        if tower.output_size != lm.dims.hidden:
            raise UserError(
                f"the vision tokens are {tower.output_size}-wide but the language model is {lm.dims.hidden}-wide: "
                "the checkpoint's projector does not match its language model"
            )
        groups = chunk_layout(tower, vopts)
        module = ReducedVisionEncoder(tower, plan, groups).eval()
        example = torch.zeros(1, plan.partitions, 3, tower.image_size, tower.image_size)
        vision_chunks = chunk_exports(module, groups, example)
        timings["load_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        with staging(out) as tmp:
            entries = []
            kind = "int8" if opts.vision_int8 else precision
            for i, chunk in enumerate(vision_chunks):
                step(f"export {vopts.target} ({kind}) vision chunk {i + 1}/{len(vision_chunks)}: {chunk.name}")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    path = tmp / f"{i:02d}-{chunk.name}{SUFFIX[vopts.target]}"
                    files = write_chunk(vopts.target, chunk, path, precision == "fp16", True, opts.vision_int8)
                inputs, outputs = io_spec(chunk, vopts.target)
                entry = {"name": chunk.name, "files": [file_entry(tmp, f, role) for f, role in files]}
                entry.update(inputs=inputs, outputs=outputs)
                if vopts.target == "onnx":
                    entry["optimized"] = "ort-extended"
                if opts.vision_int8:
                    entry["quantization"] = "int8-dynamic"
                entries.append(entry)
            llm_entries, pipelines, data_files, section = write_llm(
                lm, tmp, vopts.target, opts.llm_chunks, precision == "fp16", first_index=len(entries), step=step
            )
            data_files += copy_tokenizer(src.tokenizer_dir, tmp)
            timings["export_s"] = round(time.perf_counter() - t, 3)
            t = time.perf_counter()
            section.update(
                visual_tokens=k,
                text_budget=prefill_len - k,
                template=template,
                image_token_id=src.image_token_id,
                eos_token_ids=src.eos_token_ids,
                export={
                    "model": str(vopts.model),
                    "alpha": vopts.alpha,
                    "grid": vopts.grid,
                    "image_size": vopts.image_size,
                    "chunks": vopts.chunks,
                    "llm_chunks": opts.llm_chunks,
                    "text_tokens": prefill_len - k,
                    "new_tokens": max_len - prefill_len,
                    "template": opts.template,
                    "fp16": vopts.fp16,
                    "vision_int8": opts.vision_int8,
                },
            )
            manifest = {
                "schema_version": SCHEMA_VERSION,
                "edgetrim_version": VERSION,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "kind": "vlm",
                "target": vopts.target,
                "precision": precision,
                "source": {
                    "kind": tower.source.kind,
                    "name": tower.source.name,
                    "architecture": tower.source.architecture,
                    "random_weights": src.random_weights,
                    "config": {"vision": tower.source.config, "text": src.description["text"]},
                    "has_projector": True,
                    "token_dim": tower.output_size,
                },
                "reduction": reduction_manifest(module, str(vopts.budget)),
                "preprocessing": preprocessing_manifest(module),
                "outputs": {
                    "tokens": "vision pipeline: [1, K, D] visual tokens in the LLM's embedding space",
                    "positions": "vision pipeline: [1, K] flat index p*N + row*n + col, ascending",
                    "partition_budgets": "vision pipeline: [1, P] tokens kept per partition, summing to K",
                    "logits": "prefill / decode pipelines: [1, V] next-token logits",
                },
                "llm": section,
                "chunks": entries + llm_entries,
                "pipelines": {"vision": [e["name"] for e in entries], **pipelines},
                "files": data_files,
            }
            write_json(tmp / MANIFEST, manifest)
            step("validate")
            if not vopts.validate:
                validation = Validation("skipped", None, vopts.atol, note="--no-validate")
                llm_case: dict = {"status": "skipped"}
            elif vopts.target == "coreml":
                validation = validate_coreml(tmp, module, vopts.atol, precision == "fp16", pipeline="vision")
                llm_case = {"status": "spec-only", "note": validation.note}
            else:
                validation = validate_runtime(tmp, module, vopts.atol, "vision", opts.vision_int8)
                llm_case = {"status": "passed", **validate_llm(tmp, module, src.model, vopts.atol, opts.vision_int8)}
            timings["validate_s"] = round(time.perf_counter() - t, 3)
            all_files = [f for e in manifest["chunks"] for f in e["files"]] + data_files
            report = {
                "artifact": str(out),
                "kind": "vlm",
                "target": vopts.target,
                "precision": precision,
                "vision_int8": opts.vision_int8,
                "model": tower.source.name,
                "random_weights": src.random_weights,
                "tokens": k,
                "available_tokens": plan.budget.partitions * plan.budget.tokens_per_partition,
                "kept_fraction": manifest["reduction"]["kept_fraction"],
                "partitions": plan.partitions,
                "prefill_length": prefill_len,
                "max_length": max_len,
                "llm_layers": lm.dims.layers,
                "embedding_dtype": section["embedding_dtype"],
                "chunks": [
                    {"name": e["name"], "bytes": sum(f["bytes"] for f in e["files"])} for e in manifest["chunks"]
                ],
                "artifact_bytes": sum(f["bytes"] for f in all_files),
                "validation": validation.to_dict(),
                "llm_validation": llm_case,
                "timings_s": timings,
            }
            write_json(tmp / "report.json", report)
    return report


def budget_variant(root: Path, budget: str, out: Path, step=lambda name: None) -> Path:
    """The vlm artifact ``root`` re-exported at ``budget`` (1.0: no reduction) into ``out/budget-<budget>``.

    Same model, target, grid, template and text / new-token budgets (from the manifest's ``llm.export``);
    ``root`` itself when it already has that budget, an earlier variant when one is there.
    """
    from edgetrim.runtime.manifest import read_manifest

    manifest = read_manifest(root).manifest
    method = "none" if float(budget) == 1.0 else "hired"
    red, int8 = manifest["reduction"], manifest["llm"]["export"].get("vision_int8", False)

    def matches(m: dict) -> bool:
        r = m["reduction"]
        same_budget = r["method"] == method and (method == "none" or float(r["requested_budget"]) == float(budget))
        return same_budget and m["llm"]["export"].get("vision_int8", False) == int8

    if matches(manifest):
        return root
    folder = out / f"budget-{budget}"
    if (folder / MANIFEST).is_file():
        existing = read_manifest(folder).manifest
        if matches(existing) and existing["source"]["name"] == manifest["source"]["name"]:
            return folder
    e = manifest["llm"]["export"]
    vision = ExportOptions(
        target=manifest["target"],
        model=e["model"],
        reduce=method,
        budget=budget,
        alpha=e["alpha"],
        grid=e["grid"],
        image_size=e["image_size"],
        out=folder,
        fp16=e["fp16"],
        chunks=e["chunks"],
    )
    step(f"export budget {budget} (K from {red['tokens']} at {red['requested_budget']})")
    export_vlm(
        VlmOptions(
            vision,
            e["template"],
            None,
            None,
            e["text_tokens"],
            e["new_tokens"],
            e["llm_chunks"],
            int8,
        ),
        step=step,
    )
    return folder
