"""The tiny-vlm preset exported whole (vision + LLM) for ExecuTorch, against transformers.

The preset's language model (a seeded Qwen2ForCausalLM) is rebuilt here and fed ``inputs_embeds``
made of the prompt's token embeddings with the PyTorch HiRED tokens of the same image spliced in at
the placeholder: the exported pipeline's first-token logits (<= 1e-4) and STEPS greedy tokens
(token-exact) must equal it. Also: the preset's offline tokenizer ids lie inside the vocabulary,
the LLaVA-NeXT-shaped presets have the real shapes. Random weights: text is meaningless.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgetrim.export import build
from edgetrim.export.families import decoder
from edgetrim.export.families.vision import build_preset
from edgetrim.export.kinds.vision import reduction_plan
from edgetrim.export.options import ExportOptions
from edgetrim.export.presets import VLM_PRESETS
from edgetrim.export.stages.vision import ReducedVisionEncoder
from edgetrim.runtime.preprocess import load_image
from edgetrim.runtime.vlm import VlmPipeline, prompt_ids

PRESET = "tiny-vlm"
PROMPT = "How many cars are parked in front of the building?"
STEPS = 8
ATOL = 1e-4


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """tiny-vlm as one ExecuTorch artifact (the ONNX side of the same code runs in test_vlm.py)."""
    out = tmp_path_factory.mktemp("tiny-vlm") / "executorch"
    report = build.export(ExportOptions("executorch", model=PRESET, out=out))
    assert report["validation"]["status"] == "passed" and report["tokens"] == 64
    return out


@pytest.fixture(scope="module")
def reference():
    """(reduced vision module, causal LM) of the preset, rebuilt from the same seeds."""
    preset = VLM_PRESETS[PRESET]
    tower = build_preset(PRESET, preset.vision)
    module = ReducedVisionEncoder(tower, reduction_plan(tower, ExportOptions("onnx"), "vlm")).eval()
    return module, decoder.build_preset(preset.language_model)


def test_preset_pipeline_matches_transformers(artifact, reference, sample_png):
    module, model = reference
    pipeline = VlmPipeline(artifact)
    result = pipeline.generate(sample_png, PROMPT, STEPS, stop_at_eos=False)
    pixels = torch.from_numpy(pipeline.pixel_values(load_image(sample_png)))
    image_token = pipeline.llm["image_token_id"]
    ids = prompt_ids(pipeline.tokenizer, pipeline.llm["template"], PROMPT, image_token)
    pipeline.close()
    at = ids.index(image_token)
    table = model.get_input_embeddings().weight
    with torch.no_grad():
        visual = module(pixels)[0][0]
        seq = torch.cat([table[ids[:at]], visual, table[ids[at + 1 :]]])[None]
        expected, first = [], None
        for _ in range(STEPS):
            logits = model(inputs_embeds=seq).logits[0, -1]
            first = logits.numpy() if first is None else first
            expected.append(int(logits.argmax()))
            seq = torch.cat([seq, table[expected[-1]][None, None]], dim=1)
    assert result.visual_tokens == 64 and result.prompt_tokens == seq.shape[1] - STEPS
    assert np.abs(result.generation.first_logits - first).max() <= ATOL
    assert result.tokens == expected


def test_preset_tokenizer_inside_vocab_and_shapes(artifact):
    pipeline = VlmPipeline(artifact)
    assert pipeline.tokenizer.get_vocab_size() <= pipeline.llm["vocab_size"]
    pipeline.close()
    big = VLM_PRESETS["llava-next-small"]
    cfg = decoder.PRESETS[big.language_model].config()
    shape = (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads)
    assert shape == (896, 24, 14, 2) and (cfg.intermediate_size, cfg.vocab_size) == (4864, 151936)
    assert (big.vision.image_size, big.vision.patch_size, big.vision.projector_hidden) == (224, 16, 896)
    assert VLM_PRESETS["llava-onevision-0.5b"].vision.family == "siglip"
