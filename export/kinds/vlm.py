"""``vlm``: a whole LLaVA-style model: HiRED vision chunks + language-model prefill/decode chunks.

Pipelines ``vision`` (pixels -> K visual tokens in the LLM's embedding space), ``prefill`` and
``decode`` (``edgetrim.export.kinds.language_model``); top-level files ``embedding`` (int8 with
``embedding_scales`` when quantized) and the tokenizer files; sections ``reduction``,
``preprocessing``, ``outputs`` and ``llm`` (dims, P = K + text budget, L = P + new-token budget, the
prompt template, the image token id, the stop ids).
Checks: the vision pipeline (parity), then greedy decoding through the runtime against transformers,
both fed the PyTorch HiRED tokens of a sample image spliced into a prompt. Quantized (``quantize``:
vision int8, language-model layers int8 / int4, head int8): the vision and language-model fidelity
gates on the calibration images x prompts instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgetrim.calib.samples import sample_images
from edgetrim.export.families import decoder
from edgetrim.export.families.checkpoint import read_config, resolve_folder
from edgetrim.export.families.vision import LLAVA_TYPES, VisionTower, build_preset, load_tower
from edgetrim.export.kinds import language_model, vision
from edgetrim.export.kinds.base import Plan, Quantization, quantization
from edgetrim.export.options import ExportOptions, precision
from edgetrim.export.presets import VLM_PRESETS
from edgetrim.export.stages.decoder import LanguageModel
from edgetrim.export.validate import Check
from edgetrim.runtime import contract
from edgetrim.runtime.embedding import EmbeddingTable
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.llm import load_tokenizer, splice_visual
from edgetrim.runtime.manifest import read_manifest
from edgetrim.runtime.preprocess import preprocess
from edgetrim.runtime.vlm import check_template, prompt_ids

VALIDATION_PROMPT = "Describe the image in one sentence."


@dataclass
class VlmSource:
    """What ``model`` resolved to: tower, causal LM, tokenizer folder, template, special ids."""

    tower: VisionTower
    model: torch.nn.Module
    tokenizer_dir: Path
    template: str
    image_token_id: int
    eos_token_ids: list[int]


def load_preset(name: str, scratch: Path, feature_layer: int | None) -> VlmSource:
    if feature_layer is not None:
        raise UserError("`feature_layer` applies to checkpoint folders; presets fix their feature layer: drop it")
    preset = VLM_PRESETS[name]
    tower = build_preset(name, preset.vision)
    model = decoder.build_preset(preset.language_model)
    decoder.build_byte_tokenizer(scratch)
    tok = load_tokenizer(scratch)
    eos = [tok.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>")]
    return VlmSource(tower, model, scratch, preset.template, tok.token_to_id(contract.IMAGE_TOKEN), eos)


def load_folder(spec: str, feature_layer: int | None) -> VlmSource:
    folder, _ = resolve_folder(spec)
    cfg = read_config(folder)
    if cfg.get("model_type") not in LLAVA_TYPES:
        raise UserError(
            f"{folder} is a {cfg.get('model_type')!r} checkpoint: `with_llm` needs a LLaVA / LLaVA-NeXT / "
            "LLaVA-OneVision folder (drop `with_llm` to export a vision encoder)"
        )
    if not (folder / "tokenizer.json").is_file():
        raise UserError(
            f"{folder} has no tokenizer.json: save the tokenizer into the model folder "
            "(processor.save_pretrained / tokenizer.save_pretrained) and export again"
        )
    tower = load_tower(spec, feature_layer)
    model = decoder.load_causal_lm(folder)
    image_token = cfg.get("image_token_index", cfg.get("image_token_id"))
    if image_token is None:
        raise UserError(f"{folder}/config.json has no image_token_index: re-save the LLaVA model")
    template = decoder.TEMPLATES.get(model.config.model_type, "")
    return VlmSource(
        tower, model, folder, template, int(image_token), decoder.eos_ids(load_tokenizer(folder), model.config)
    )


def llm_checks(
    src: VlmSource,
    module,
    template: str,
    root: Path,
    quant: Quantization,
    prefill_lengths: list[int],
    max_len: int,
    reference: EmbeddingTable,
) -> list[Check]:
    """The staged artifact's own tokenizer and table build the prompt around the PyTorch HiRED tokens of an
    image; the runtime's greedy decoding must equal transformers' on it (a sample image and prompt, and
    extended to fill each longer prefill length), or pass the language-model gates (calibration images x
    prompts, at most ``GATE_CASES``), where transformers embeds with the float ``reference`` table instead."""
    pp = module.tower
    table = EmbeddingTable.open(read_manifest(root))
    tokenizer = load_tokenizer(root / "tokenizer.json")

    def embed(image, prompt: str, tables: tuple[EmbeddingTable, ...]) -> list[np.ndarray]:
        """The prompt around the image's HiRED tokens, embedded from each of ``tables``: [n, D] each."""
        x = preprocess(image, pp.image_size, module.plan.grid, pp.mean, pp.std)
        with torch.no_grad():
            visual = module(torch.from_numpy(x))[0][0].numpy()
        ids = prompt_ids(tokenizer, template, prompt, src.image_token_id)
        return [splice_visual(ids, t, visual, src.image_token_id) for t in tables]

    def case(name: str, image, prompt: str, steps: int):
        """A gate case: the runtime embeds from the artifact's table, transformers from the float ``reference``."""
        embeds, floats = embed(image, prompt, (table, reference))
        return language_model.greedy_case(src.model, name, embeds, table, steps, (floats, reference))

    if not quant.on:
        [embeds] = embed(sample_images(1)[0], VALIDATION_PROMPT, (table,))
        cases = language_model.bucket_cases(src.model, "sample-0 + prompt", embeds, table, prefill_lengths, max_len)
        return [language_model.generate_check(c) for c in cases]
    calib = quant.calibration
    pairs = [(i, p) for p in range(len(calib.prompts)) for i in range(len(calib.images))][: language_model.GATE_CASES]
    cases = [
        case(f"{calib.image_names[i]} + prompt-{p}", calib.images[i], calib.prompts[p], language_model.GATE_TOKENS)
        for i, p in pairs
    ]
    return [language_model.gate_check(cases, quant)]


def plan(opts: ExportOptions, scratch: Path) -> Plan:
    kind = contract.VLM
    template = opts.value("template", kind)
    if template is not None:
        check_template(template)
    feature_layer = opts.value("feature_layer", kind)
    spec = opts.model_spec
    src = load_preset(spec, scratch, feature_layer) if spec in VLM_PRESETS else load_folder(spec, feature_layer)
    template = template or src.template
    if not template:
        raise UserError(f"no chat template is known for a {src.model.config.model_type} LLM: pass `template`")
    check_template(template)
    calibration = vision.apply_calibration(src.tower, opts, kind)
    quant = quantization(opts, kind, language_model.MODES, spec in VLM_PRESETS)
    module, vision_chunks = vision.build_encoder(src.tower, opts, kind, quant)
    k = module.plan.budget.total
    tok = load_tokenizer(src.tokenizer_dir)
    vocab = src.model.get_output_embeddings().out_features
    if tok.get_vocab_size(with_added_tokens=True) > vocab:
        raise UserError(
            f"{src.tokenizer_dir}/tokenizer.json has {tok.get_vocab_size()} tokens, more than the model's vocabulary "
            f"{vocab}: the tokenizer does not belong to this model"
        )
    template_tokens = len(prompt_ids(tok, template, "", src.image_token_id)) - 1
    kv_cache = language_model.kv_cache_mode(opts, kind)
    prefill_lengths, max_len = language_model.lengths(opts, kind, kv_cache, k, template_tokens)
    prefill_len = prefill_lengths[-1]
    lm = LanguageModel(src.model, max_len, prefill_lengths, language_model.fused_layers(opts, kind)).eval()
    if src.tower.output_size != lm.dims.hidden:
        raise UserError(
            f"the vision tokens are {src.tower.output_size}-wide but the language model is {lm.dims.hidden}-wide: "
            "the checkpoint's projector does not match its language model"
        )
    tied = language_model.tied_weight(lm, opts.target, quant.mode)
    lm_chunks, lm_pipelines = language_model.lm_chunks(lm, opts.value("llm_chunks", kind), quant.mode, kv_cache, tied)
    llm = language_model.lm_section(lm, quant.on, kv_cache, tied) | {
        "visual_tokens": k,
        "text_budget": prefill_len - k,
        "template": template,
        "image_token_id": src.image_token_id,
        "eos_token_ids": src.eos_token_ids,
    }
    sections = vision.sections(module, str(opts.value("budget", kind)), llm=True) | {"llm": llm}
    sections |= {"calibration": calibration} if calibration else {}
    source = src.tower.source
    source.config = {"vision": source.config, "text": lm.model_type}
    source.random_weights = spec in VLM_PRESETS
    return Plan(
        kind=kind,
        source=source,
        precision=precision(opts.target, opts.fp16),
        chunks=vision_chunks + lm_chunks,
        pipelines={contract.VISION: [c.name for c in vision_chunks], **lm_pipelines},
        sections=sections,
        data_files=language_model.lm_files(lm, src.tokenizer_dir, quant.on, tied),
        checks=lambda root: [
            vision.vision_check(module, quant),
            *llm_checks(
                src, module, template, root, quant, prefill_lengths, max_len, EmbeddingTable(lm.embedding_table())
            ),
        ],
        summary=vision.summary(module)
        | {"quantization": quant.describe(), "llm_layers": lm.dims.layers}
        | {"prefill_lengths": prefill_lengths, "max_length": max_len, "embedding_dtype": llm["embedding_dtype"]}
        | {"kv_cache": kv_cache}
        | ({"calibration": calibration} if calibration else {}),
        source_extra={"has_projector": True, "token_dim": src.tower.output_size},
    )
