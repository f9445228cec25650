"""``text-encoder``: a T5 encoder chunked per block (``edgetrim.export.stages.t5``), for video captions.

Chunks ``embed``, ``block_XX``, ``final``; pipeline ``text_encoder``; top-level file ``tokenizer``
(the folder's own, or an offline word-level one for presets); section ``text_encoder``. The caption
embeddings [1, L, D] go to a video denoiser whose ``caption_channels`` is D. CoreML stays fp32 (T5's
activations overflow fp16). Check: the pipeline on a sample caption against transformers'
T5EncoderModel, every position.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgetrim.export.families import t5
from edgetrim.export.kinds.base import DataFile, Plan, single
from edgetrim.export.options import ExportOptions, precision
from edgetrim.export.stages.base import stage_examples
from edgetrim.export.stages.t5 import chunk_names, example_ids, t5_stages
from edgetrim.export.validate import Case, Check
from edgetrim.runtime import contract
from edgetrim.runtime.errors import UserError

DEFAULT_LENGTH = 300  # Open-Sora 1.2's caption length


def plan(opts: ExportOptions, scratch: Path) -> Plan:
    del scratch
    kind = contract.TEXT_ENCODER
    if opts.fp16:
        raise UserError("`fp16` does not apply to T5 encoders: their activations overflow fp16, drop `fp16`")
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
    chunks = [single(n, s, x) for n, s, x in zip(names, stages, stage_examples(stages, feeds), strict=True)]
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask.long()).last_hidden_state.numpy()
    case = Case("sample caption", {k: v.numpy() for k, v in feeds.items()}, {contract.CAPTION_EMBEDS: want})
    section = {
        "architecture": "T5EncoderModel",
        "max_length": length,
        "hidden_size": config.d_model,
        "vocab_size": config.vocab_size,
        "tokenizer": contract.TOKENIZER,
        "tokenizer_origin": origin,
    }
    return Plan(
        kind=kind,
        source=source,
        precision=precision(opts.target, None, coreml_default="fp32"),
        chunks=chunks,
        pipelines={contract.TEXT: names},
        sections={"text_encoder": section},
        data_files=[DataFile(contract.TOKENIZER, t5.TOKENIZER, lambda path: tokenizer.save(str(path)))],
        checks=lambda root: [Check(contract.TEXT, [case])],
        summary={"max_length": length},
        source_extra={"has_projector": False, "token_dim": config.d_model},
    )
