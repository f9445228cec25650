"""Video-denoiser artifacts (STDiT3 + TDTM) end to end: export, manifest, parity, sampler, LPL, bad input.

* ONNX (stdit3-tiny preset) and ExecuTorch (a depth-1 random checkpoint folder in the published
  layout) artifacts are exported once per module; each runs its ``denoiser`` pipeline through the
  runtime's chunk loader with the ``plain`` and the ``tdtm`` functions and must match the PyTorch
  model's forward with ``merge=False`` / ``merge=True``;
* the manifest validates against the published schema and lists both functions of every depth step;
* the CoreML multifunction packages' specs list both functions;
* the numpy sampler over the ONNX artifact equals a torch eager Open-Sora 1.2 rectified-flow sampler
  over the PyTorch model (CFG, timestep shift, merge steps, fixed leap);
* adaptive LPL leaps exactly where its rule says on a constructed velocity sequence.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from jsonschema import Draft202012Validator
from torchless import BLOCK_TORCH

from edgetrim.export.build import export
from edgetrim.export.families.stdit3 import (
    STDiT3,
    STDiT3Config,
    build_preset,
    init_random,
    load_stdit3,
    save_checkpoint,
)
from edgetrim.export.options import ExportOptions
from edgetrim.runtime.chunks import ChunkLoader
from edgetrim.runtime.contract import MANIFEST
from edgetrim.runtime.manifest import SCHEMA_PATH, open_artifact
from edgetrim.runtime.sampler import LeapRule, sample, shift_ratio, timesteps
from edgetrim.runtime.video import DENOISER_INPUTS, VideoDenoiser, random_caption

CLI = [sys.executable, "-m", "edgetrim.cli.main"]
SMALL = STDiT3Config(depth=1, hidden_size=32, num_heads=2, caption_channels=16, model_max_length=6)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("video")


@pytest.fixture(scope="module")
def tiny() -> STDiT3:
    return build_preset("stdit3-tiny")


@pytest.fixture(scope="module")
def onnx_report(root) -> dict:
    return export(ExportOptions(target="onnx", model="stdit3-tiny", out=root / "tiny-onnx"))


@pytest.fixture(scope="module")
def checkpoint(root) -> Path:
    """A depth-1 STDiT3 written in the published layout (config.json + model.safetensors)."""
    return save_checkpoint(init_random(STDiT3(SMALL), seed=5), root / "stdit3-small-ckpt")


def forward_inputs(model: STDiT3, latent_shape: list[int], seed: int = 1) -> dict[str, np.ndarray]:
    c = model.config
    rng = np.random.default_rng(seed)
    b, length = latent_shape[0], c.model_max_length
    mask = np.ones((b, length), np.float32)
    mask[:, length - 2 :] = 0
    return {
        "latent": rng.standard_normal(latent_shape).astype(np.float32),
        "timestep": np.full(b, 640.0, np.float32),
        "caption_embeds": rng.standard_normal((b, length, c.caption_channels)).astype(np.float32),
        "caption_mask": mask,
    }


def check_pipeline_parity(artifact_dir: Path, model: STDiT3, atol: float) -> None:
    """caption + denoiser pipelines through the chunk loader == model.forward, for both functions."""
    artifact = open_artifact(artifact_dir)
    feeds = forward_inputs(model, artifact.manifest["video"]["latent_shape"])
    with ChunkLoader(artifact, pipeline="caption") as captioner:
        caption = captioner.run({"caption_embeds": feeds["caption_embeds"]})["caption"]
    with torch.no_grad():
        assert np.abs(caption - model.y_embedder(torch.from_numpy(feeds["caption_embeds"])).numpy()).max() <= atol
    outs = {}
    with ChunkLoader(artifact, pipeline="denoiser", inputs=DENOISER_INPUTS) as loader:
        for function, merge in (("plain", False), ("tdtm", True)):
            got = loader.run({**feeds, "caption": caption}, function=function)["velocity"]
            with torch.no_grad():
                want = model(*(torch.from_numpy(feeds[k]) for k in ("latent", "timestep", "caption_embeds")),
                             torch.from_numpy(feeds["caption_mask"]), merge=merge).numpy()  # fmt: skip
            assert got.shape == want.shape
            assert np.abs(got - want).max() <= atol, (function, np.abs(got - want).max())
            outs[function] = got
    assert np.abs(outs["plain"] - outs["tdtm"]).max() > 1e-3  # the two functions really differ


# ---------------------------------------------------------------------------------- ONNX artifact


def test_onnx_artifact_matches_pytorch_both_functions(onnx_report, root, tiny):
    v = onnx_report["validation"]
    assert v["status"] == "passed" and v["max_abs_error"] <= 1e-4
    assert [c["case"].removesuffix("/reference") for c in v["cases"]] == [
        "caption",
        "embed",
        "depth_00:plain",
        "depth_01:plain",
        "final",
        "embed",
        "depth_00:tdtm",
        "depth_01:tdtm",
        "final",
    ]
    check_pipeline_parity(root / "tiny-onnx", tiny, 1e-4)


def test_manifest_validates_and_lists_both_functions(onnx_report, root, tiny):
    schema = json.loads(SCHEMA_PATH.read_text())
    manifest = json.loads((root / "tiny-onnx" / MANIFEST).read_text())
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(manifest)]
    assert errors == []
    assert manifest["kind"] == "video-denoiser" and manifest["source"]["random_weights"] is True
    assert manifest["pipelines"] == {"caption": ["caption"], "denoiser": ["embed", "depth_00", "depth_01", "final"]}
    for chunk in manifest["chunks"]:
        if chunk["name"].startswith("depth_"):
            functions = chunk["functions"]
            assert set(functions) == {"plain", "tdtm"}
            roles = {f["path"]: f["role"] for f in chunk["files"]}
            assert roles[functions["plain"]["file"]] == "program" and roles[functions["tdtm"]["file"]] == "program_tdtm"
            assert sum(r == "external_data" for r in roles.values()) == 1  # one weights file for both graphs
        else:
            assert "functions" not in chunk
    video = manifest["video"]
    assert video["latent_shape"] == [2, 4, 4, 8, 8] and video["tokens_per_frame"] == 16
    assert video["scheduler"]["num_steps"] == 30
    null = np.load(open_artifact(root / "tiny-onnx").data_file("null_caption"))
    assert np.array_equal(null, tiny.y_embedder.y_embedding.numpy())
    # a damaged video section is caught by the schema
    del manifest["video"]["latent_shape"]
    assert any("latent_shape" in e.message for e in Draft202012Validator(schema).iter_errors(manifest))


def test_two_variant_size(onnx_report, root):
    """Both functions cost <= 1.05x one (tiny preset: ~25 KB graphs next to 0.5 MB of shared weights)."""
    null = (root / "tiny-onnx" / "null_caption.npy").stat().st_size
    assert onnx_report["artifact_bytes"] == sum(c["bytes"] for c in onnx_report["chunks"]) + null
    assert onnx_report["two_variant_ratio"] <= 1.05, onnx_report["two_variant_ratio"]
    weights = sum(p.stat().st_size for p in (root / "tiny-onnx").glob("*depth*.onnx.data"))
    tdtm_graphs = sum(p.stat().st_size for p in (root / "tiny-onnx").glob("*depth*.tdtm.onnx"))
    extra = onnx_report["artifact_bytes"] - onnx_report["one_variant_bytes"]
    # what TDTM adds: its graphs plus the few external bytes only it references (alignment, small constants)
    assert tdtm_graphs <= extra <= tdtm_graphs + 0.01 * weights, (extra, tdtm_graphs, weights)


# ---------------------------------------------------------------------------------- sampler


def ref_timesteps(n: int, height: int, width: int, num_frames: int) -> list[torch.Tensor]:
    """Open-Sora 1.2 RFLOW timesteps with ``timestep_transform`` (opensora/schedulers/rf/rectified_flow.py)."""
    out = []
    for t in [(1.0 - i / n) * 1000 for i in range(n)]:
        t = torch.tensor([t]) / 1000
        ratio_space = (torch.tensor(float(height * width)) / (512 * 512)).sqrt()
        ratio_time = torch.tensor(float(num_frames // 17 * 5)).sqrt()
        ratio = ratio_space * ratio_time
        out.append(ratio * t / (1 + (ratio - 1) * t) * 1000)
    return out


def ref_sample(model, z, y, y_null, mask, ts, guidance, merge_steps, leap_at):
    """Open-Sora 1.2 RFLOW.sample over the PyTorch model (CFG batch of 2), with TDTM steps and a fixed leap."""
    with torch.no_grad():
        for i, t in enumerate(ts):
            pred = model(torch.cat([z, z]), torch.cat([t, t]), torch.cat([y, y_null]), mask.repeat(2, 1),
                         merge=i < merge_steps).chunk(2, dim=1)[0]  # fmt: skip
            cond, uncond = pred.chunk(2, dim=0)
            v = uncond + guidance * (cond - uncond)
            if i == leap_at:
                return z + v * t / 1000
            dt = ts[i] - ts[i + 1] if i < len(ts) - 1 else ts[i]
            z = z + v * dt / 1000
    return z


def test_schedule_matches_open_sora():
    want = torch.cat(ref_timesteps(30, 160, 216, 68)).numpy()
    assert np.allclose(timesteps(30, shift_ratio(160, 216, 68)), want, rtol=1e-6)
    assert shift_ratio(512, 512, 1) == 1.0


@pytest.mark.parametrize(("steps", "merge", "leap"), [(4, 0, None), (6, 3, 4)])
def test_sampler_matches_torch_reference(onnx_report, root, tiny, steps, merge, leap):
    with VideoDenoiser(root / "tiny-onnx") as denoiser:
        caption = random_caption(*denoiser.caption_shape(), seed=3)
        caption.mask[-2:] = 0
        result = denoiser.generate(caption, steps, merge, leap, None, 4.0, seed=2)
        noise = np.random.default_rng(2).standard_normal(denoiser.latent_shape).astype(np.float32)
        (ph, pw), frames = denoiser.video["pixel_size"], denoiser.video["pixel_frames"]
    want = ref_sample(
        tiny,
        torch.from_numpy(noise)[None],
        torch.from_numpy(caption.embeds)[None],
        tiny.y_embedder.y_embedding[None],
        torch.from_numpy(caption.mask)[None],
        ref_timesteps(steps, ph, pw, frames),
        4.0,
        merge,
        leap,
    )[0].numpy()
    assert result.steps_run == (steps if leap is None else leap + 1)
    assert result.functions == ["tdtm" if i < merge else "plain" for i in range(result.steps_run)]
    assert np.abs(result.latent - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max())), np.abs(
        result.latent - want
    ).max()


def test_cfg_batch_one_samples_like_batch_two(onnx_report, root):
    """--cfg-batch 1 (CFG halves in two calls) gives the batch-2 artifact's latent, TDTM steps and leap included."""
    single = export(ExportOptions(target="onnx", model="stdit3-tiny", cfg_batch=1, out=root / "tiny-onnx-b1"))
    assert single["validation"]["status"] == "passed"
    assert open_artifact(root / "tiny-onnx-b1").manifest["video"]["latent_shape"][0] == 1
    latents = []
    for folder in ("tiny-onnx", "tiny-onnx-b1"):
        with VideoDenoiser(root / folder) as denoiser:
            caption = random_caption(*denoiser.caption_shape(), seed=3)
            latents.append(denoiser.generate(caption, 5, 2, 3, None, 4.0, seed=2).latent)
    assert latents[0].shape == latents[1].shape
    assert np.abs(latents[0] - latents[1]).max() <= 1e-4 * max(1.0, float(np.abs(latents[0]).max()))


def unit_velocities(sims: list[float]) -> list[np.ndarray]:
    """2-D unit vectors whose consecutive cosine similarities are exactly ``sims``."""
    angles = np.concatenate([[0.0], np.cumsum(np.arccos(sims))])
    return [np.array([math.cos(a), math.sin(a)], np.float32) for a in angles]


@pytest.mark.parametrize(("min_steps", "leap_step"), [(4, 6), (8, 10), (11, None)])
def test_adaptive_lpl_rule(min_steps, leap_step):
    # s_1..s_10: improving to 0.70, then 3 stalls (0.7005 and 0.7009 are within 1e-3), 0.71 resets, 3 stalls
    sims = [0.50, 0.60, 0.70, 0.7005, 0.60, 0.7009, 0.71, 0.7105, 0.7102, 0.7108, 0.95]
    vs = unit_velocities(sims)
    schedule = timesteps(12, 1.0)
    z0 = np.zeros(2, np.float32)
    calls = []

    def velocity(z, t, function):
        calls.append(t)
        return vs[len(calls) - 1]

    result = sample(velocity, z0, schedule, rule=LeapRule(min_steps=min_steps, patience=3, threshold=1e-3))
    assert result.leap_step == leap_step
    assert np.allclose(result.similarities, sims[: result.steps_run - 1], atol=1e-6)
    # reference: Euler steps up to the leap, then one step over the remaining time
    z = z0.astype(np.float64)
    last = len(schedule) - 1 if leap_step is None else leap_step
    for i in range(last + 1):
        dt = schedule[i] if (i == leap_step or i == len(schedule) - 1) else schedule[i] - schedule[i + 1]
        z = z + vs[i] * dt / 1000
    assert result.steps_run == last + 1 and len(calls) == last + 1
    assert np.allclose(result.latent, z, atol=1e-5)


# ---------------------------------------------------------------------------------- ExecuTorch, CoreML


def test_executorch_artifact_from_checkpoint(root, checkpoint):
    report = export(ExportOptions(target="executorch", model=str(checkpoint), out=root / "et"))
    assert report["random_weights"] is False and report["validation"]["status"] == "passed"
    assert {c["case"] for c in report["validation"]["cases"]} >= {"depth_00:plain/reference", "depth_00:tdtm/reference"}
    manifest = json.loads((root / "et" / MANIFEST).read_text())
    depth = next(c for c in manifest["chunks"] if c["name"] == "depth_00")
    assert len(depth["files"]) == 1
    assert {f["method"] for f in depth["functions"].values()} == {"forward_plain", "forward_tdtm"}
    model, _ = load_stdit3(str(checkpoint))
    # the second method adds less than one copy of the depth step's weights: they are stored once
    weights = sum(p.numel() * 4 for m in (model.spatial_blocks[0], model.temporal_blocks[0]) for p in m.parameters())
    assert report["artifact_bytes"] - report["one_variant_bytes"] < 0.5 * weights, (report, weights)
    check_pipeline_parity(root / "et", model, 1e-4)


def test_coreml_multifunction_spec(root, checkpoint):
    from edgetrim.export.targets.coreml import spec_summary

    report = export(ExportOptions(target="coreml", model=str(checkpoint), out=root / "coreml"))
    assert report["validation"]["status"] == "spec-only" and "macOS" in report["validation"]["note"]
    manifest = json.loads((root / "coreml" / MANIFEST).read_text())
    depth = next(c for c in manifest["chunks"] if c["name"] == "depth_00")
    functions = spec_summary(root / "coreml" / depth["functions"]["tdtm"]["file"])["functions"]
    assert set(functions) == {"forward_plain", "forward_tdtm"}
    for spec in functions.values():
        assert {i["name"]: i["shape"] for i in spec["inputs"]} == {i["name"]: i["shape"] for i in depth["inputs"]}
        assert [o["name"] for o in spec["outputs"]] == ["hidden_01"]


# ---------------------------------------------------------------------------------- bad input


def edgetrim(cwd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def one_line_error(proc: subprocess.CompletedProcess, *hints: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for hint in hints:
        assert hint in lines[0], (hint, lines[0])


@pytest.mark.parametrize(
    ("args", "hints"),
    [
        (["--model", "stdit3-tiny", "--frames", "5"], ["--frames 5", "even"]),
        (["--model", "stdit3-huge"], ["unknown preset", "stdit3-tiny"]),
        (["--model", "stdit3-tiny", "--cfg-batch", "3"], ["--cfg-batch 3"]),
    ],
)
def test_bad_export_input(tmp_path, args, hints):
    one_line_error(edgetrim(tmp_path, "export", "--target", "onnx", *args, "--out", "out"), *hints)
    assert list(tmp_path.iterdir()) == []


def test_bad_run_input(tmp_path, onnx_report, root):
    art = root / "tiny-onnx"
    np.save(tmp_path / "wide.npy", np.zeros((8, 31), np.float32))
    np.save(tmp_path / "long.npy", np.zeros((9, 32), np.float32))
    np.save(tmp_path / "noise.npy", np.zeros((4, 3, 8, 8), np.float32))
    out = tmp_path / "out"
    cases = [
        (["--caption", tmp_path / "wide.npy"], ["width 31", "32"]),
        (["--caption", tmp_path / "long.npy"], ["9 tokens", "1..8"]),
        (["--steps", "4", "--merge-steps", "5"], ["--merge-steps 5", "0..4"]),
        (["--steps", "4", "--leap-at", "4"], ["--leap-at 4", "1..3"]),
        (["--noise", tmp_path / "noise.npy"], ["[4, 3, 8, 8]", "[4, 4, 8, 8]"]),
    ]
    for args, hints in cases:
        one_line_error(edgetrim(tmp_path, "run", art, *args, "--out", out), *hints)
    assert not out.exists()


# ---------------------------------------------------------------------------------- T5 text encoder


def test_t5_text_encoder_chunked_feeds_the_sampler(root, onnx_report):
    """A save_pretrained T5 (v1.1 gated-GELU, random) exported per block == transformers; its output drives sampling."""
    from transformers import T5Config, T5EncoderModel

    from edgetrim.export.families.t5 import offline_tokenizer
    from edgetrim.runtime.text import encode_prompt, encode_text

    torch.manual_seed(11)
    config = T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_heads=4)
    config.feed_forward_proj, config.dense_act_fn, config.is_gated_act = "gated-gelu", "gelu_new", True
    t5 = T5EncoderModel(config).eval()
    t5.save_pretrained(root / "t5-folder")
    report = export(ExportOptions("onnx", str(root / "t5-folder"), root / "t5", caption_length=8))
    assert report["validation"]["status"] == "passed" and not report["random_weights"]
    assert [c["name"] for c in report["chunks"]] == ["embed", "block_00", "block_01", "block_02", "final"]
    manifest = json.loads((root / "t5" / MANIFEST).read_text())
    assert list(Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).iter_errors(manifest)) == []
    assert manifest["kind"] == "text-encoder" and manifest["text_encoder"]["hidden_size"] == 32

    text = "two dogs running in the snow"
    embeds, mask = encode_text(root / "t5", text)
    ids = offline_tokenizer().encode(text).ids
    assert int(mask.sum()) == len(ids) == 7  # six words + </s>
    with torch.no_grad():
        padded = torch.tensor([ids + [0] * (8 - len(ids))])
        want = t5(input_ids=padded, attention_mask=torch.from_numpy(mask[None]).long()).last_hidden_state[0].numpy()
    assert np.abs(embeds - want).max() <= 1e-4

    with VideoDenoiser(root / "tiny-onnx") as denoiser:
        caption = encode_prompt(root / "t5", text, *denoiser.caption_shape(), None)
        assert np.array_equal(caption.mask, mask) and np.array_equal(caption.embeds, embeds)
        result = denoiser.generate(caption, 3, 1, None, None, 7.0, seed=0)
    assert np.isfinite(result.latent).all() and result.steps_run == 3


# ---------------------------------------------------------------------------------- torch-free run, bench

RUN_WITHOUT_TORCH = (
    BLOCK_TORCH
    + r"""from edgetrim.cli.main import main

code = main(["run", sys.argv[1], "--steps", "4", "--merge-steps", "2", "--leap-at", "2", "--out", sys.argv[2]])
print("RC", code, "TORCH", any(m == "torch" or m.startswith("torch.") for m in sys.modules))
"""
)


def test_run_is_torch_free_and_writes_outputs(tmp_path, onnx_report, root):
    from PIL import Image

    proc = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_TORCH, str(root / "tiny-onnx"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "RC 0 TORCH False" in proc.stdout, proc.stdout + proc.stderr
    latent = np.load(tmp_path / "out" / "latent.npy")
    assert latent.shape == (4, 4, 8, 8) and np.isfinite(latent).all()
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["functions"] == ["tdtm", "tdtm", "plain"] and run["leap_step"] == 2 and run["random_weights"]
    sheet = Image.open(tmp_path / "out" / "contact_sheet.png")
    side = 4 * (8 * (96 // 8) + 2) + 2  # 4 frames across, 4 channels down: 8 x 8 latents scaled to 96 px, 2 px gaps
    assert sheet.size == (side, side)


def test_bench_reports_side_by_side(tmp_path, onnx_report, root):
    proc = edgetrim(tmp_path, "bench", root / "tiny-onnx", "--steps", "4", "--step-repeats", "1", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "video_bench.json").read_text())
    sampling = report["timing"]["sampling"]
    assert sampling["plain"]["evaluations"] == 4 and sampling["tdtm_lpl"]["evaluations"] == 3
    assert sampling["tdtm_lpl"]["tdtm_evaluations"] == 2 and sampling["tdtm_lpl"]["leap_step"] == 2
    assert [r["ratio"] > 0 for r in report["rows"]] == [True] * 3
    assert "streamed" in report["memory"]["2-block budget"]["plan"]
    assert report["memory"]["resident"]["plan"] == "all chunks resident"
    assert "| one denoising step" in (tmp_path / "video_bench.md").read_text()
