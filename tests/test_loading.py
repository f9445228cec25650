"""Checkpoint folders saved with save_pretrained load through the real transformers/safetensors path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2Config,
    SiglipVisionConfig,
)

from edgetrim.export.build import export as export_artifact
from edgetrim.export.families.vision import load_tower, peaked_attention_init
from edgetrim.export.options import ExportOptions
from edgetrim.runtime.vision import VisionEncoder

VISION = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    image_size=64,
    patch_size=8,
)
TEXT = dict(
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=1,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=320,
)


def save(model, folder):
    torch.manual_seed(0)
    peaked_attention_init(model, 64, 0)  # trained-like peaked attention, so near-ties do not decide HiRED
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    torch.manual_seed(0)
    return save(CLIPVisionModel(CLIPVisionConfig(**VISION)), tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def llava_next_folder(tmp_path_factory):
    torch.manual_seed(0)
    cfg = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**VISION),
        text_config=Qwen2Config(**TEXT),
        image_grid_pinpoints=[[128, 128]],
        image_token_index=319,
    )
    return save(LlavaNextForConditionalGeneration(cfg), tmp_path_factory.mktemp("llava_next"))


def test_clip_folder_loads_the_saved_weights(clip_folder):
    tower = load_tower(str(clip_folder))
    assert tower.source.kind == "folder" and not tower.source.random_weights
    hf = CLIPVisionModel.from_pretrained(clip_folder, attn_implementation="eager").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = hf(x, output_hidden_states=True).hidden_states[-2]
        h = tower.embed(x)
        for layer in tower.layers:
            h = tower.run_layer(layer, h)
    torch.testing.assert_close(h, want, atol=1e-5, rtol=1e-5)


def test_clip_folder_exports_and_runs(clip_folder, tmp_path, sample_png):
    report = export_artifact(ExportOptions(target="onnx", model=str(clip_folder), out=tmp_path / "a"))
    assert report["validation"]["status"] == "passed"
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "folder" and manifest["source"]["random_weights"] is False
    result = VisionEncoder(tmp_path / "a").encode(sample_png)
    assert result.tokens.shape == (1, 64, 64)  # 20% of 5 x 64


def test_llava_next_folder_outputs_projector_tokens(llava_next_folder, tmp_path):
    tower = load_tower(str(llava_next_folder))
    assert tower.projector is not None and tower.output_size == TEXT["hidden_size"]
    assert len(tower.layers) == 3  # vision_feature_layer -2 of 4 layers
    report = export_artifact(ExportOptions(target="executorch", model=str(llava_next_folder), out=tmp_path / "a"))
    assert report["validation"]["status"] == "passed"
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["chunks"][0]["outputs"][0]["shape"] == [1, 64, TEXT["hidden_size"]]
    # the projector is the checkpoint's: compare with transformers' own LLaVA-NeXT modules
    hf = LlavaNextForConditionalGeneration.from_pretrained(llava_next_folder).eval()
    x = torch.randn(3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(tower.projector(x).numpy(), hf.model.multi_modal_projector(x).numpy(), atol=1e-6)


def test_llava_1_5_and_onevision_folders_load(tmp_path):
    torch.manual_seed(0)
    llava = LlavaForConditionalGeneration(
        LlavaConfig(vision_config=CLIPVisionConfig(**VISION), text_config=Qwen2Config(**TEXT), image_token_index=319)
    )
    tower = load_tower(str(save(llava, tmp_path / "llava")))
    assert tower.family == "clip" and tower.output_size == TEXT["hidden_size"]
    onevision = LlavaOnevisionForConditionalGeneration(
        LlavaOnevisionConfig(
            vision_config=SiglipVisionConfig(**VISION), text_config=Qwen2Config(**TEXT), image_token_index=319
        )
    )
    tower = load_tower(str(save(onevision, tmp_path / "ov")))
    assert tower.family == "siglip" and not tower.has_cls
    assert len(tower.layers) == 4  # OneVision uses the last layer (-1)


def test_wheel_contains_every_package(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            ".",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        cwd=__import__("pathlib").Path(__file__).parents[1],
    )
    wheel = next(tmp_path.glob("edgetrim-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "edgetrim/export/reducers/hired.py",
        "edgetrim/runtime/manifest.py",
        "edgetrim/runtime/manifest.schema.json",
        "edgetrim/export/reducers/budget.py",
        "edgetrim/cli/main.py",
        "edgetrim/export/targets/coreml.py",
    ):
        assert needed in names, needed


def test_presets_command_lists_every_family():
    proc = subprocess.run(
        [sys.executable, "-m", "edgetrim.cli.main", "presets"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("clip-vit-l14-336", "llava-next-small", "llava-onevision-0.5b", "stdit3-xl-2", "t5-tiny"):
        assert name in proc.stdout, name
