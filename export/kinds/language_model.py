"""``language-model``: a decoder LM as a static-shape prefill graph and a one-token decode graph over a
static KV cache, each chunked by layer groups plus a head (``edgetrim.export.stages.decoder``).

Pipelines ``prefill`` and ``decode``; top-level files ``embedding`` (the token table, float16 when it
would exceed 256 MB in float32) and the tokenizer files when the model has them; manifest section
``llm``. The ``vlm`` kind writes the same chunks beside its vision chunks. Check: greedy decoding
through the runtime against transformers fed the same embeddings (first-token logits, tokens);
quantized (``quantize`` int8 / int4 layers, the head int8): the language-model fidelity gates on the
calibration prompts instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from edgetrim.export.families import decoder
from edgetrim.export.families.checkpoint import Source, resolve_folder
from edgetrim.export.kinds.base import Chunk, DataFile, Plan, Quantization, quantization, single
from edgetrim.export.options import ExportOptions, precision
from edgetrim.export.stages.base import block_groups, stage_examples
from edgetrim.export.stages.decoder import (
    HeadStage,
    LanguageModel,
    build_llm_stages,
    embedding_dtype_for,
    example_feeds,
)
from edgetrim.export.validate import Case, Check
from edgetrim.runtime import contract
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.llm import load_tokenizer

TEXT_TOKENS = 64  # default text budget of the prefill beyond the visual tokens
NEW_TOKENS = 64  # default room to generate beyond the prefill
CHECK_TOKENS = 4  # greedy tokens compared at export
GATE_TOKENS = 8  # greedy tokens a quantized model's agreement is measured over
GATE_CASES = 4  # calibration cases the language-model gates run (each a full greedy run in PyTorch)
MODES = ("int8", "int4")  # the quantize modes a language model takes (its head stays int8)


def lengths(opts: ExportOptions, kind: str, fixed: int, template_tokens: int = 0) -> tuple[int, int]:
    """(P, L): P = ``fixed`` (the K visual tokens) + a text budget unless given; L = P + 64 unless given."""
    p = opts.value("prefill_length", kind)
    p = fixed + TEXT_TOKENS if p is None else p
    if p < fixed + template_tokens:
        raise UserError(
            f"`prefill_length` {p} cannot hold the {fixed} visual tokens and the {template_tokens}-token template: "
            f"pass at least {fixed + template_tokens + 16}"
        )
    length = opts.value("max_length", kind)
    length = p + NEW_TOKENS if length is None else length
    if length <= p:
        raise UserError(f"`max_length` {length} leaves no room to generate after the prefill of {p}: pass more")
    groups = opts.value("llm_chunks", kind)
    if groups < 1:
        raise UserError(f"`llm_chunks` {groups} must be at least 1: layer groups per language-model graph")
    return p, length


def lm_chunks(lm: LanguageModel, groups: int, mode: str = "none") -> tuple[list[Chunk], dict[str, list[str]]]:
    """Prefill and decode chunks (layer groups + head each) with example inputs, and their pipelines.
    ``mode`` int8 / int4 quantizes the layer groups; the head (final norm + LM head) is int8 either way:
    int4 heads are known to make greedy decoding repeat itself."""
    layout = block_groups(lm.dims.layers, groups)
    chunks, pipelines = [], {}
    for graph, feeds in zip((contract.PREFILL, contract.DECODE), example_feeds(lm), strict=True):
        stages = build_llm_stages(lm, layout, prefill=graph == contract.PREFILL)
        names = [
            f"{graph}_head" if isinstance(s, HeadStage) else f"{graph}_{s.start:02d}-{s.stop - 1:02d}" for s in stages
        ]
        quantize = [None if mode == "none" else "int8" if isinstance(s, HeadStage) else mode for s in stages]
        examples = stage_examples(stages, feeds)
        chunks += [single(*args) for args in zip(names, stages, examples, quantize, strict=True)]
        pipelines[graph] = names
    return chunks, pipelines


def lm_section(lm: LanguageModel) -> dict:
    return {
        "architecture": lm.architecture,
        "model_type": lm.model_type,
        **lm.dims.to_dict(),
        "embedding_dtype": embedding_dtype_for(lm.dims),
        "cache": "per layer [1, num_kv_heads, max_length, head_dim]; decode reads past_*_XX, writes present_*_XX",
    }


def lm_files(lm: LanguageModel, tokenizer_dir: Path | None) -> list[DataFile]:
    """The embedding table and, when known, the tokenizer files."""
    table = lm.embedding_table().astype(embedding_dtype_for(lm.dims))
    files = [DataFile(contract.EMBEDDING, contract.DATA_FILES[contract.EMBEDDING], lambda path: np.save(path, table))]
    for name, role in contract.TOKENIZER_FILES.items():
        if tokenizer_dir is not None and (tokenizer_dir / name).is_file():
            files.append(DataFile(role, name, lambda path, src=tokenizer_dir / name: shutil.copyfile(src, path)))
    return files


def greedy_case(model: torch.nn.Module, name: str, embeds: np.ndarray, table: np.ndarray, steps: int) -> Case:
    """transformers' greedy continuation of ``embeds`` [n, D], new rows from ``table`` (the artifact's own,
    so both sides see the same rows): first-token logits [V] and the tokens."""
    seq, tokens, first = torch.from_numpy(embeds)[None], [], None
    with torch.no_grad():
        while len(tokens) < steps:
            logits = model(inputs_embeds=seq).logits[0, -1]
            first = logits.numpy() if first is None else first
            tokens.append(int(logits.argmax()))
            row = torch.from_numpy(np.array(table[tokens[-1]], np.float32))
            seq = torch.cat([seq, row[None, None]], dim=1)
    expected = {contract.LOGITS: first, "token_ids": np.array(tokens, np.int64)}
    return Case(name, {contract.INPUTS_EMBEDS: embeds}, expected)


def generate_check(case: Case) -> Check:
    return Check(contract.PREFILL, [case], generate=len(case.expected["token_ids"]), relative=True)


def gate_check(cases: list[Case], quant: Quantization) -> Check:
    """The language-model fidelity gates over ``cases`` (greedy runs of the float model)."""
    steps = len(cases[0].expected["token_ids"])
    return Check(contract.PREFILL, cases, generate=steps, fidelity=quant.language_gate)


def load(opts: ExportOptions, scratch: Path) -> tuple[torch.nn.Module, Source, Path | None]:
    """A decoder preset (byte-level tokenizer built in ``scratch``) or a causal-LM folder / hub id."""
    spec = opts.model_spec
    if spec in decoder.PRESETS:
        decoder.build_byte_tokenizer(scratch)
        model = decoder.build_preset(spec)
        return model, Source("preset", spec, type(model).__name__, True, model.config.to_dict()), scratch
    folder, kind = resolve_folder(spec)
    model = decoder.load_causal_lm(folder)
    name = str(folder.resolve()) if kind == "folder" else spec
    has_tokenizer = (folder / "tokenizer.json").is_file()
    return (
        model,
        Source(kind, name, type(model).__name__, False, model.config.to_dict()),
        folder if has_tokenizer else None,
    )


def plan(opts: ExportOptions, scratch: Path) -> Plan:
    kind = contract.LANGUAGE_MODEL
    model, source, tokenizer_dir = load(opts, scratch)
    quant = quantization(opts, kind, MODES, source.random_weights)
    prefill_len, max_len = lengths(opts, kind, 0)
    lm = LanguageModel(model, max_len, prefill_len).eval()
    chunks, pipelines = lm_chunks(lm, opts.value("llm_chunks", kind), quant.mode)

    def checks(root: Path) -> list[Check]:
        table = np.load(root / contract.DATA_FILES[contract.EMBEDDING], mmap_mode="r")
        if quant.on:
            return [gate_check(prompt_cases(model, root, table, quant, prefill_len, max_len), quant)]
        ids = np.random.default_rng(0).integers(0, lm.dims.vocab, min(prefill_len, 12))
        embeds = np.asarray(table[ids], np.float32)
        return [generate_check(greedy_case(model, "random-ids", embeds, table, min(CHECK_TOKENS, max_len - len(ids))))]

    return Plan(
        kind=kind,
        source=source,
        precision=precision(opts.target, opts.fp16),
        chunks=chunks,
        pipelines=pipelines,
        sections={"llm": lm_section(lm)},
        data_files=lm_files(lm, tokenizer_dir),
        checks=checks,
        summary={"llm_layers": lm.dims.layers, "prefill_length": prefill_len, "max_length": max_len}
        | {"quantization": quant.describe()},
        source_extra={"has_projector": False, "token_dim": lm.dims.hidden},
    )


def prompt_cases(model, root: Path, table, quant: Quantization, prefill_len: int, max_len: int) -> list[Case]:
    """The calibration prompts (the artifact's tokenizer; seeded random ids when it has none), at most
    ``GATE_CASES``, each cut to the prefill length, with the float model's greedy continuation."""
    tokenizer_file = root / "tokenizer.json"
    tokenizer = load_tokenizer(tokenizer_file) if tokenizer_file.is_file() else None
    rng = np.random.default_rng(0)
    cases = []
    for i, prompt in enumerate(quant.calibration.prompts[:GATE_CASES]):
        if tokenizer is not None:
            ids = np.array(tokenizer.encode(prompt).ids[:prefill_len], np.int64)
        else:
            ids = rng.integers(0, table.shape[0], min(prefill_len, 12))
        steps = min(GATE_TOKENS, max_len - len(ids))
        cases.append(greedy_case(model, f"prompt-{i}", np.asarray(table[ids], np.float32), table, steps))
    return cases
