"""``text-encoder``: a T5 encoder chunked per block (``edgetrim.export.stages.t5``), for video captions.

Chunks ``embed``, ``block_XX``, ``final``; pipeline ``text_encoder``; top-level file ``tokenizer``
(the folder's own, or an offline word-level one for presets); section ``text_encoder``. The caption
embeddings [1, L, D] go to a video denoiser whose ``caption_channels`` is D. CoreML stays fp32 (T5's
activations overflow fp16). Check: the pipeline on a sample caption against transformers'
T5EncoderModel, every position.

``quantize`` int8 (int4 is refused): the ``block_XX`` chunks, which hold every linear weight (q, k, v,
o and the feed-forward: ~12 D^2 per block for T5-XXL's gated GELU); ``embed`` (the token table, a
gather no target's int8 scheme covers: 32128 x 4096 floats for T5-XXL) and ``final`` (one norm) stay
float. The check is then the caption gate: the calibration prompts, tokenized by the artifact's own
tokenizer, through the runtime against transformers (``GATE_PROMPTS`` at most).
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgetrim.export.families import t5
from edgetrim.export.kinds.base import DataFile, Plan, Quantization, quantization, single
from edgetrim.export.options import ExportOptions, precision
from edgetrim.export.stages.base import stage_examples
from edgetrim.export.stages.t5 import chunk_names, example_ids, t5_stages
from edgetrim.export.validate import Case, Check
from edgetrim.runtime import contract
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.text import tokenize

DEFAULT_LENGTH = 300  # Open-Sora 1.2's caption length
MODES = ("int8",)  # the quantize modes a text encoder takes
GATE_PROMPTS = 8  # calibration prompts the caption gate runs


def reference_case(model, name: str, ids: torch.Tensor, mask: torch.Tensor) -> Case:
    """input_ids int64 [1, L], attention_mask float32 [1, L] with transformers' caption embeddings [1, L, D]."""
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask.long()).last_hidden_state.numpy()
    feeds = {contract.INPUT_IDS: ids.numpy(), contract.ATTENTION_MASK: mask.numpy()}
    return Case(name, feeds, {contract.CAPTION_EMBEDS: want})


def gate_check(model, root: Path, length: int, quant: Quantization) -> Check:
    """The caption gate over the calibration prompts, tokenized as the runtime does with the artifact's
    own tokenizer."""
    cases = []
    for i, prompt in enumerate(quant.calibration.prompts[:GATE_PROMPTS]):
        ids, mask = tokenize(root / t5.TOKENIZER, prompt, length, model.config.vocab_size)
        cases.append(reference_case(model, f"prompt-{i}", torch.from_numpy(ids), torch.from_numpy(mask)))
    return Check(contract.TEXT, cases, fidelity=quant.caption_gate)


def plan(opts: ExportOptions, scratch: Path) -> Plan:
    del scratch
    kind = contract.TEXT_ENCODER
    if opts.fp16:
        raise UserError("`fp16` does not apply to T5 encoders: their activations overflow fp16, drop `fp16`")
    quant = quantization(opts, kind, MODES, random_weights=opts.model_spec in t5.PRESETS)
    model, source, folder = t5.load_t5(opts.model_spec)
    length = opts.value("caption_length", kind)
    length = length or (t5.PRESETS[opts.model_spec][1] if opts.model_spec in t5.PRESETS else DEFAULT_LENGTH)
    if length < 1:
        raise UserError(f"`caption_length` {length} must be positive: e.g. 300 (Open-Sora 1.2)")
    tokenizer, origin = t5.load_tokenizer(folder)
    config = model.config
    ids, mask = example_ids(tokenizer, length, config.vocab_size)
    stages = t5_stages(model, length)
    feeds = {contract.INPUT_IDS: ids, contract.ATTENTION_MASK: mask}
    names = chunk_names(config.num_layers)
    examples = stage_examples(stages, feeds)
    chunks = [
        single(n, s, x, quantize="int8" if quant.on and n.startswith("block_") else None)
        for n, s, x in zip(names, stages, examples, strict=True)
    ]
    case = reference_case(model, "sample caption", ids, mask)
    section = {
        "architecture": "T5EncoderModel",
        "max_length": length,
        "hidden_size": config.d_model,
        "vocab_size": config.vocab_size,
        "tokenizer": contract.TOKENIZER,
        "tokenizer_origin": origin,
    }

    def checks(root: Path) -> list[Check]:
        return [gate_check(model, root, length, quant) if quant.on else Check(contract.TEXT, [case])]

    return Plan(
        kind=kind,
        source=source,
        precision=precision(opts.target, None, coreml_default="fp32"),
        chunks=chunks,
        pipelines={contract.TEXT: names},
        sections={"text_encoder": section},
        data_files=[DataFile(contract.TOKENIZER, t5.TOKENIZER, lambda path: tokenizer.save(str(path)))],
        checks=checks,
        summary={"max_length": length, "quantization": quant.describe()},
        source_extra={"has_projector": False, "token_dim": config.d_model},
    )
