"""``language-model``: a decoder LM as a static-shape prefill graph and a one-token decode graph over a
static KV cache, each chunked by layer groups plus a head (``edgetrim.export.stages.decoder``).

Pipelines ``prefill`` and ``decode``; top-level files ``embedding`` (the token table: float16 when it
would exceed 256 MB in float32; int8 with ``embedding_scales`` when quantized, see
``edgetrim.runtime.embedding``; ONNX, an LM head tied to the table: int8_block, the table being the head's
weight, stored once) and the tokenizer files when the model has them; manifest section
``llm``. The ``vlm`` kind writes the same chunks beside its vision chunks. Check: greedy decoding
through the runtime against transformers fed the same embeddings (first-token logits, tokens);
quantized (``quantize`` int8 / int4 layers, the head int8, the int8 table): the language-model fidelity
gates on the calibration prompts instead, transformers embedding with the float table.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from edgetrim.export.families import decoder
from edgetrim.export.families.checkpoint import Source, resolve_folder
from edgetrim.export.kinds.base import Chunk, DataFile, Plan, Quantization, quantization
from edgetrim.export.options import ExportOptions, precision
from edgetrim.export.stages.base import block_groups, stage_examples
from edgetrim.export.stages.decoder import (
    LanguageModel,
    build_llm_stages,
    decode_feeds,
    embedding_dtype_for,
    prefill_feeds,
)
from edgetrim.export.targets.base import TiedWeight
from edgetrim.export.validate import Case, Check
from edgetrim.runtime import contract
from edgetrim.runtime.embedding import EmbeddingTable, quantize_blocks, quantize_rows
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.llm import load_tokenizer
from edgetrim.runtime.manifest import read_manifest

TEXT_TOKENS = 64  # default text budget of the prefill beyond the visual tokens
NEW_TOKENS = 64  # default room to generate beyond the prefill
CHECK_TOKENS = 4  # greedy tokens compared at export
GATE_TOKENS = 8  # greedy tokens a quantized model's agreement is measured over
GATE_CASES = 4  # calibration cases the language-model gates run (each a full greedy run in PyTorch)
LLM_OPS = ("fused", "standard")  # `llm_ops` on onnx
MODES = ("int8", "int4")  # the quantize modes a language model takes (its head stays int8)
HEAD_CHUNK = "lm_head"  # final norm + LM head (a vlm's vision chunks have their own "head")
MIN_BUCKET_TEXT = 16  # the smallest text budget a default prefill bucket gets
# int8_block: a tied head's (and table's) values per scale along D, the largest of these dividing D. 128 vs 32
# on Qwen2-0.5B's head (2 threads): 5.0 vs 7.6 ms a token in ONNX Runtime's bits-8 MatMulNBits, scales 4 vs 17 MB
TIED_BLOCKS = (128, 64, 32)


def lengths(
    opts: ExportOptions, kind: str, kv_cache: str, fixed: int, template_tokens: int = 0
) -> tuple[list[int], int]:
    """(prefill lengths ascending, L). The largest, P, is ``fixed`` (the K visual tokens) + a text budget
    unless given; L = P + 64 unless given. The smaller ones (prefill buckets) are `prefill_buckets` as
    given, else ``fixed`` + the text budget halved down to ``MIN_BUCKET_TEXT``: the runtime prefills a
    prompt at the smallest length that holds it, so short prompts do not pay for P. Core ML's iOS 17 form
    (`kv_cache` io) has none by default: each of its packages stores the weights again."""
    p = opts.value("prefill_length", kind)
    p = fixed + TEXT_TOKENS if p is None else p
    least = fixed + template_tokens
    if p < least:
        raise UserError(
            f"`prefill_length` {p} cannot hold the {fixed} visual tokens and the {template_tokens}-token template: "
            f"pass at least {least + 16}"
        )
    length = opts.value("max_length", kind)
    length = p + NEW_TOKENS if length is None else length
    if length <= p:
        raise UserError(f"`max_length` {length} leaves no room to generate after the prefill of {p}: pass more")
    groups = opts.value("llm_chunks", kind)
    if groups < 1:
        raise UserError(f"`llm_chunks` {groups} must be at least 1: layer groups per language-model graph")
    buckets = opts.value("prefill_buckets", kind)
    if buckets is None and kv_cache == contract.KV_IO and opts.target == contract.COREML:
        buckets = "none"  # iOS 17 packages hold their own weights: a bucket would store them once more
    return sorted({*prefill_buckets(buckets, p, fixed, least), p}), length


def prefill_buckets(spec: str | None, p: int, fixed: int, least: int) -> list[int]:
    """The prefill lengths below P: ``None`` the halved text budgets, ``none`` no bucket, else the given
    comma-separated lengths, each in (``least``, P)."""
    if spec is None:
        out, text = [], (p - fixed) // 2
        while text >= MIN_BUCKET_TEXT and fixed + text > least:
            out.append(fixed + text)
            text //= 2
        return out
    if spec == "none":
        return []
    try:
        given = [int(v) for v in spec.split(",")]
    except ValueError:
        raise UserError(f"`prefill_buckets` {spec!r} is not a list of lengths: pass e.g. 96,128 or none") from None
    bad = [v for v in given if not least < v < p]
    if bad:
        raise UserError(
            f"`prefill_buckets` {bad[0]} must lie between the {least} template and visual tokens and "
            f"`prefill_length` {p}: pass lengths in {least + 1}..{p - 1}"
        )
    return given


def kv_cache_mode(opts: ExportOptions, kind: str) -> str:
    """``state`` (Core ML's default: the caches live in the model, iOS 18) or ``io`` (caches in and out of
    every call: ONNX, ExecuTorch, and Core ML for iOS 17)."""
    mode = opts.value("kv_cache", kind)
    if opts.target != contract.COREML:
        if mode not in (None, contract.KV_IO):
            raise UserError(f"`kv_cache` {mode} is for coreml; {opts.target} language models take io: drop it")
        return contract.KV_IO
    if mode not in (None, contract.KV_STATE, contract.KV_IO):
        raise UserError(f"`kv_cache` {mode!r} is unknown: choose state (iOS 18) or io (iOS 17)")
    if mode == contract.KV_IO and opts.value("quantize", kind) == "int4":
        raise UserError("`quantize` int4 needs iOS 18 on coreml, `kv_cache` io is the iOS 17 form: pick one")
    return mode or contract.KV_STATE


def fused_layers(opts: ExportOptions, kind: str) -> bool:
    """``llm_ops``: ONNX layer groups as ONNX Runtime's fused contrib ops (``fused``, the default: ``FusedStage``)
    or standard ONNX ops only (``standard``: for TensorRT and runtimes other than ONNX Runtime); other targets
    export the written-out layers."""
    ops = opts.value("llm_ops", kind)
    if ops not in (None, *LLM_OPS):
        raise UserError(f"`llm_ops` {ops!r} is unknown: choose {' or '.join(LLM_OPS)}")
    if opts.target != contract.ONNX:
        if ops is not None:
            raise UserError(f"`llm_ops` is for onnx; {opts.target} language models take no choice: drop it")
        return False
    return ops != "standard"


def tied_weight(lm: LanguageModel, target: str, mode: str) -> TiedWeight | None:
    """The int8_block table a quantized ONNX export shares with its LM head, when the head is tied to the
    embedding (same [V, D] values) and D is a multiple of one of ``TIED_BLOCKS``; None otherwise (other
    targets, float exports, untied heads: the table and the head are stored apart)."""
    block = next((b for b in TIED_BLOCKS if lm.dims.hidden % b == 0), None)
    if target != contract.ONNX or mode == "none" or block is None:
        return None
    table = lm.embedding_table()
    head = lm.lm_head.weight.detach().float().numpy()
    if getattr(lm.lm_head, "bias", None) is not None or head.shape != table.shape or not np.array_equal(head, table):
        return None
    values, scales = quantize_blocks(table, block)
    return TiedWeight(
        values, scales, (contract.DATA_FILES[contract.EMBEDDING], contract.DATA_FILES[contract.EMBEDDING_SCALES])
    )


def lm_chunks(
    lm: LanguageModel,
    groups: int,
    mode: str = "none",
    kv_cache: str = contract.KV_IO,
    tied: TiedWeight | None = None,
) -> tuple[list[Chunk], dict[str, list[str]]]:
    """One chunk per layer group (``layers_AA-BB``) plus ``lm_head``, each holding every graph over one copy
    of its weights: functions ``prefill_<n>`` (one per prefill length, ``lm.prefill_lengths``) and
    ``decode``, each with its own example inputs. Pipelines ``prefill`` and ``decode`` run the same chunks.
    ``kv_cache`` ``state``: layer groups keep their caches as model state (Core ML, iOS 18, one
    multifunction package); ``io``: caches are inputs and outputs (on Core ML: one package per function,
    iOS 17: it has no multifunction packages, so the weights are stored once per function there).
    ``mode`` int8 / int4 quantizes the layer groups; the head (final norm + LM head) is int8 either way:
    int4 heads are known to make greedy decoding repeat itself. ``tied`` (``tied_weight``): the head's weight
    is the int8_block embedding table, stored once."""
    layout = block_groups(lm.dims.layers, groups)
    graphs = {contract.prefill_function(n): n for n in lm.prefill_lengths} | {contract.DECODE: None}
    stateful = kv_cache == contract.KV_STATE
    stages = {f: build_llm_stages(lm, layout, n, stateful) for f, n in graphs.items()}
    feeds = {f: decode_feeds(lm) if n is None else prefill_feeds(lm, n) for f, n in graphs.items()}
    examples = {f: stage_examples(stages[f], feeds[f]) for f in graphs}
    names = [f"layers_{a:02d}-{b - 1:02d}" for a, b in layout] + [HEAD_CHUNK]
    chunks = []
    for i, name in enumerate(names):
        quantize = None if mode == "none" else "int8" if name == HEAD_CHUNK else mode
        functions = {f: stages[f][i].eval() for f in graphs}
        example = {f: examples[f][i] for f in graphs}
        head_tie = tied if name == HEAD_CHUNK and mode != "none" else None
        chunks.append(Chunk(name, functions, example, quantize, coreml_ios17=not stateful, tied=head_tie))
    return chunks, {contract.PREFILL: names, contract.DECODE: names}


def lm_section(lm: LanguageModel, quantized: bool, kv_cache: str, tied: TiedWeight | None = None) -> dict:
    cache = "per layer [1, num_kv_heads, max_length, head_dim]; " + (
        "layer chunks hold key_cache_XX / value_cache_XX as model state: prefill writes, decode updates in place"
        if kv_cache == contract.KV_STATE
        else "decode reads past_*_XX, writes present_*_XX"
    )
    return {
        "architecture": lm.architecture,
        "model_type": lm.model_type,
        **lm.dims.to_dict(),
        "prefill_lengths": lm.prefill_lengths,
        "embedding_dtype": contract.EMBEDDING_INT8_BLOCK if tied else embedding_dtype_for(lm.dims, quantized),
        **({"embedding_tied": HEAD_CHUNK} if tied else {}),
        "kv_cache": kv_cache,
        "cache": cache,
    }


def npy_file(role: str, array: np.ndarray) -> DataFile:
    """``array`` saved as the .npy data file of ``role``."""
    return DataFile(role, contract.DATA_FILES[role], lambda path: np.save(path, array))


def lm_files(
    lm: LanguageModel, tokenizer_dir: Path | None, quantized: bool, tied: TiedWeight | None = None
) -> list[DataFile]:
    """The embedding table [V, D] (int8 + its scales [V] when ``quantized``; ``tied``'s uint8 values and block
    scales [V, D / block] when the head shares it) and, when known, the tokenizer files."""
    dtype = embedding_dtype_for(lm.dims, quantized)
    if tied is not None:
        files = [npy_file(contract.EMBEDDING, tied.values), npy_file(contract.EMBEDDING_SCALES, tied.scales)]
    elif dtype == contract.EMBEDDING_INT8:
        values, scales = quantize_rows(lm.embedding_table())
        files = [npy_file(contract.EMBEDDING, values), npy_file(contract.EMBEDDING_SCALES, scales)]
    else:
        files = [npy_file(contract.EMBEDDING, lm.embedding_table().astype(dtype))]
    for name, role in contract.TOKENIZER_FILES.items():
        if tokenizer_dir is not None and (tokenizer_dir / name).is_file():
            files.append(DataFile(role, name, lambda path, src=tokenizer_dir / name: shutil.copyfile(src, path)))
    return files


def greedy_case(
    model: torch.nn.Module,
    name: str,
    embeds: np.ndarray,
    table: EmbeddingTable,
    steps: int,
    reference: tuple[np.ndarray, EmbeddingTable] | None = None,
) -> Case:
    """transformers' greedy continuation of a prompt: first-token logits [V] and the tokens, expected of the
    runtime fed ``embeds`` [n, D] (from the artifact's ``table``). transformers gets the same rows (parity), or
    the ``reference`` prompt [n, D] and table, the float model's (the gates: they then see the int8 table)."""
    prompt, table = reference or (embeds, table)
    seq, tokens, first = torch.from_numpy(prompt)[None], [], None
    with torch.no_grad():
        while len(tokens) < steps:
            logits = model(inputs_embeds=seq).logits[0, -1]
            first = logits.numpy() if first is None else first
            tokens.append(int(logits.argmax()))
            seq = torch.cat([seq, torch.from_numpy(table.rows([tokens[-1]]))[None]], dim=1)
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
    kv_cache = kv_cache_mode(opts, kind)
    prefill_lengths, max_len = lengths(opts, kind, kv_cache, 0)
    prefill_len = prefill_lengths[-1]
    lm = LanguageModel(model, max_len, prefill_lengths, fused_layers(opts, kind)).eval()
    tied = tied_weight(lm, opts.target, quant.mode)
    chunks, pipelines = lm_chunks(lm, opts.value("llm_chunks", kind), quant.mode, kv_cache, tied)

    def checks(root: Path) -> list[Check]:
        table = EmbeddingTable.open(read_manifest(root))
        if quant.on:
            reference = EmbeddingTable(lm.embedding_table())
            return [gate_check(prompt_cases(model, root, table, reference, quant, prefill_len, max_len), quant)]
        ids = np.random.default_rng(0).integers(0, lm.dims.vocab, min(prefill_lengths[0], 12))
        cases = bucket_cases(model, "random-ids", table.rows(ids), table, prefill_lengths, max_len)
        return [generate_check(case) for case in cases]

    return Plan(
        kind=kind,
        source=source,
        precision=precision(opts.target, opts.fp16),
        chunks=chunks,
        pipelines=pipelines,
        sections={"llm": lm_section(lm, quant.on, kv_cache, tied)},
        data_files=lm_files(lm, tokenizer_dir, quant.on, tied),
        checks=checks,
        summary={"llm_layers": lm.dims.layers, "prefill_lengths": prefill_lengths, "max_length": max_len}
        | {"kv_cache": kv_cache}
        | {"quantization": quant.describe()},
        source_extra={"has_projector": False, "token_dim": lm.dims.hidden},
    )


def bucket_cases(
    model, name: str, embeds: np.ndarray, table: EmbeddingTable, prefill_lengths: list[int], max_len: int
) -> list[Case]:
    """Greedy cases that run every prefill length: ``embeds`` [n, D] as they are, then extended with
    seeded random token rows to fill each longer prefill length exactly (the next smaller one cannot
    hold it, so the runtime runs that bucket)."""
    rng = np.random.default_rng(0)
    cases = []
    for length in [len(embeds)] + [p for p in prefill_lengths if p > len(embeds)]:
        filled = np.concatenate([embeds, table.rows(rng.integers(0, table.vocab, length - len(embeds)))])
        steps = min(CHECK_TOKENS, max_len - length + 1)
        cases.append(greedy_case(model, f"{name} ({length} tokens)", filled, table, steps))
    return cases


def prompt_cases(
    model,
    root: Path,
    table: EmbeddingTable,
    reference: EmbeddingTable,
    quant: Quantization,
    prefill_len: int,
    max_len: int,
) -> list[Case]:
    """The calibration prompts (the artifact's tokenizer; seeded random ids when it has none), at most
    ``GATE_CASES``, each cut to the prefill length, with the float model's greedy continuation (embedded from
    the float ``reference`` table; the runtime's from the artifact's ``table``)."""
    tokenizer_file = root / "tokenizer.json"
    tokenizer = load_tokenizer(tokenizer_file) if tokenizer_file.is_file() else None
    rng = np.random.default_rng(0)
    cases = []
    for i, prompt in enumerate(quant.calibration.prompts[:GATE_CASES]):
        if tokenizer is not None:
            ids = np.array(tokenizer.encode(prompt).ids[:prefill_len], np.int64)
        else:
            ids = rng.integers(0, table.vocab, min(prefill_len, 12))
        steps = min(GATE_TOKENS, max_len - len(ids))
        cases.append(greedy_case(model, f"prompt-{i}", table.rows(ids), table, steps, (reference.rows(ids), reference)))
    return cases
