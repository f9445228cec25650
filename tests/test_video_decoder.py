"""Video-decoder artifacts (Open-Sora 1.2 VAE decoder) end to end: export, parity, streaming, video files, bad input.

* tiny-vae exported to ONNX (from its checkpoint folder in the published layout) and to ExecuTorch (the preset),
  both at 7 latent frames (a full micro-frame chunk and a shorter last one: the temporal chunks hold functions
  ``latents_5`` and ``latents_2``), passes validation: the whole decode through the runtime's host loop and every
  chunk of every function against ``OpenSoraVAE.decode`` within 1e-4 (the ExecuTorch temporal stages run the 4-D
  rewrite of Conv3d / GroupNorm inside XNNPACK); the CoreML packages (multifunction for the temporal chunks) pass
  the spec check; the manifest validates against the published schema;
* the temporal weights are stored once whatever the functions: each target's temporal chunks (CoreML: their weight
  files) take less than 1.3x the temporal decoder's float32 weight bytes (a copy per function would be 2x);
* ``edgetrim run DIR --latent`` (torch blocked) writes video.mp4 that PyAV reads back with the frame count and size
  of the manifest, video.gif and run.json (per-stage timings, timeline);
* under a small memory budget the decoder streams (fewer resident chunks) and gives identical frames; under a
  budget only the running temporal function's backends are loaded;
* uint8 frames follow Open-Sora's save rule; without PyAV only the GIF is written, and the note says so;
* bad input: a latent of other channels or geometry, a missing stage, a denoiser whose latent channels or temporal
  factor the VAE does not match -> one line, exit 2;
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from jsonschema import Draft202012Validator
from torchless import BLOCK_TORCH

from edgetrim.cli.main import main
from edgetrim.export.build import export
from edgetrim.export.families.vae import build_preset, save_checkpoint
from edgetrim.export.kinds.video_decoder import decode_shape
from edgetrim.export.options import ExportOptions
from edgetrim.export.presets import kind_of
from edgetrim.runtime import contract
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import SCHEMA_PATH, read_manifest
from edgetrim.runtime.video_decoder import NO_PYAV, DecoderRunner, check_pair, to_uint8, write_video

TOLERANCE = 1e-4
SHARED_WEIGHTS = 1.3  # temporal chunk bytes / temporal weight bytes: at most this (two copies would be 2x)
GEOMETRY = {"frames": 7, "height": 4, "width": 4, "micro_batch": 3}  # 17 + 5 video frames, 8 batches, 2 padding
FULL, LAST = contract.temporal_function(5), contract.temporal_function(2)
STAGES = [f"temporal_{s}" for s in ("head", "block_3", "block_2", "block_1", "block_0")]
STAGES += [f"spatial_{s}" for s in ("head", "up_0", "up_1", "up_2", "up_3")]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("video-decoder")


@pytest.fixture(scope="module")
def folder(root) -> Path:
    """tiny-vae's weights as a checkpoint folder in the published layout (config.json + model.safetensors)."""
    return save_checkpoint(build_preset("tiny-vae"), root / "tiny-vae-folder")


@pytest.fixture(scope="module")
def onnx_report(root, folder) -> dict:
    """7 latent frames -> 17 + 5 video frames (functions latents_5, latents_2), spatial micro-batches of 3."""
    return export(ExportOptions(target="onnx", model=str(folder), out=root / "tiny-onnx", **GEOMETRY))


@pytest.fixture(scope="module")
def onnx_root(onnx_report) -> Path:
    return Path(onnx_report["artifact"])


@pytest.fixture(scope="module")
def latent(root) -> Path:
    path = root / "latent.npy"
    np.save(path, np.random.default_rng(3).standard_normal((4, 7, 4, 4)).astype(np.float32))  # [C, T, h, w]
    return path


def assert_parity(report: dict) -> None:
    validation = report["validation"]
    assert validation["status"] == "passed"
    assert validation["max_abs_error"] <= TOLERANCE
    labels = [case["case"] for case in validation["cases"]]
    assert "decoder/seeded latent" in labels  # the whole decode through the runtime
    checked = {label.split("/")[0] for label in labels}
    assert checked >= set(STAGES[5:])  # and every chunk of every pipeline, every function of the temporal ones
    assert checked >= {f"{name}:{function}" for name in STAGES[:5] for function in (FULL, LAST)}


def temporal_weight_bytes() -> int:
    """float32 bytes of the temporal decoder's weights (and the latent scale / shift)."""
    model = build_preset("tiny-vae")
    tensors = [*model.temporal_vae.parameters(), model.scale, model.shift]
    return 4 * sum(t.numel() for t in tensors)


def assert_weights_stored_once(artifact: Path) -> float:
    """The temporal chunks (two functions each) hold one copy of the temporal weights; returns the ratio of their
    bytes (CoreML: of their packages' weight files; the program specs of tiny-vae weigh as much as its weights)."""
    manifest = read_manifest(artifact).manifest
    temporal = [c for c in manifest["chunks"] if c["name"] in manifest["pipelines"][contract.TEMPORAL]]
    assert all(list(c["functions"]) == [FULL, LAST] for c in temporal)
    if manifest["target"] == contract.COREML:
        paths = [artifact / f["path"] for c in temporal for f in c["files"]]
        stored = sum(w.stat().st_size for path in paths for w in path.glob("Data/*/weights/*"))
    else:
        stored = sum(f["bytes"] for c in temporal for f in c["files"])
    ratio = stored / temporal_weight_bytes()
    assert 1.0 <= ratio < SHARED_WEIGHTS, ratio
    return ratio


def test_onnx_export_from_a_published_folder_matches_pytorch_and_schema(folder, onnx_report, onnx_root):
    assert kind_of(str(folder)) == contract.VIDEO_DECODER
    assert_parity(onnx_report)
    manifest = json.loads((onnx_root / contract.MANIFEST).read_text())
    assert Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).is_valid(manifest)
    assert manifest["kind"] == contract.VIDEO_DECODER
    assert manifest["source"]["kind"] == "folder" and not manifest["source"]["random_weights"]
    assert manifest["pipelines"] == {"temporal": STAGES[:5], "spatial": STAGES[5:]}
    decoder = manifest["decoder"]
    assert decoder["latent_shape"] == [1, 4, 7, 4, 4] and decoder["pixel_frames"] == 22
    assert decoder["pixel_size"] == [32, 32] and decoder["micro_batch"] == 3
    assert decoder["plan"] == [
        {"pipeline": "temporal", "function": FULL, "invocations": 1, "latent_frames": 5, "pixel_frames": 17},
        {"pipeline": "temporal", "function": LAST, "invocations": 1, "latent_frames": 2, "pixel_frames": 5},
        {"pipeline": "spatial", "invocations": 8, "frames": 3, "padding_frames": 2},
    ]
    chunks = {c["name"]: c for c in manifest["chunks"]}
    head, tail = chunks["temporal_head"]["functions"], chunks["temporal_block_0"]["functions"]
    assert head[FULL]["inputs"] == [{"name": "latent_chunk", "shape": [5, 4, 4, 4], "dtype": "float32"}]
    assert head[LAST]["inputs"] == [{"name": "latent_chunk", "shape": [2, 4, 4, 4], "dtype": "float32"}]
    assert tail[FULL]["outputs"][0]["shape"] == [17, 4, 4, 4]
    assert tail[LAST]["outputs"][0]["shape"] == [5, 4, 4, 4]  # 8 frames, 3 padding dropped
    assert "functions" not in chunks["spatial_head"]
    assert chunks["spatial_up_3"]["outputs"] == [{"name": "frames", "shape": [3, 3, 32, 32], "dtype": "float32"}]
    # one graph per function over one .onnx.data per chunk, its tensors stored once
    roles = [f["role"] for f in chunks["temporal_block_3"]["files"]]
    assert roles == [contract.PROGRAM, contract.program_role(LAST, False), contract.EXTERNAL_DATA]
    assert_weights_stored_once(onnx_root)


def test_executorch_export_matches_pytorch_and_stores_the_weights_once(root):
    geometry = {k: v for k, v in GEOMETRY.items() if k != "micro_batch"}  # the model's micro-batch of 4
    report = export(ExportOptions(target="executorch", model="tiny-vae", out=root / "tiny-executorch", **geometry))
    assert_parity(report)
    artifact = Path(report["artifact"])
    pte = sorted(p.name for p in artifact.glob("*.pte"))
    assert pte == sorted(f"{i:02d}-{name}.pte" for i, name in enumerate(STAGES))  # one program per chunk
    methods = read_manifest(artifact).manifest["chunks"][0]["functions"]
    assert {f: m["method"] for f, m in methods.items()} == {f: contract.method_name(f) for f in (FULL, LAST)}
    assert_weights_stored_once(artifact)


def test_coreml_export_passes_the_spec_check(root):
    report = export(ExportOptions(target="coreml", model="tiny-vae", out=root / "tiny-coreml", **GEOMETRY))
    assert report["validation"]["status"] == "spec-only" and report["precision"] == "fp32"
    cases = report["validation"]["cases"]
    assert len(cases) == len(STAGES) and all(name in c["case"] for name, c in zip(STAGES, cases, strict=True))
    methods = sorted(contract.method_name(f) for f in (FULL, LAST))
    assert all(c["functions"] == methods for c in cases[:5])  # one multifunction package per temporal chunk
    assert_weights_stored_once(Path(report["artifact"]))


def test_run_writes_an_mp4_that_reads_back_without_torch(onnx_root, latent, tmp_path):
    out = tmp_path / "run"
    code = f"{BLOCK_TORCH}\nfrom edgetrim.cli.main import main\nraise SystemExit(main(sys.argv[1:]))"
    args = ["run", str(onnx_root), "--latent", str(latent), "--out", str(out)]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    import av

    with av.open(str(out / "video.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 22 and frames[0].shape == (32, 32, 3)
    from PIL import Image

    with Image.open(out / "video.gif") as gif:
        assert (gif.n_frames, gif.size) == (22, (32, 32))
    record = json.loads((out / "run.json").read_text())
    assert record["frames_shape"] == [22, 32, 32, 3] and record["fps"] == 24.0
    assert len(record["stage_ms"]) == 10
    assert record["stage_ms"]["temporal_head"]["invocations"] == 2  # latents_5, then latents_2
    assert record["stage_ms"]["spatial_head"]["invocations"] == 8
    computes = [e for e in record["timeline"] if e["kind"] == "compute"]
    assert len(computes) == 5 + 5 + 5 * 8 and all(e["end_ms"] >= e["start_ms"] >= 0 for e in computes)


def test_streaming_under_a_small_budget_gives_identical_frames(onnx_root, latent):
    z = np.load(latent)
    with DecoderRunner(onnx_root) as resident:
        want = resident.decode(z)
    assert want.dtype == np.uint8 and want.shape == (22, 32, 32, 3)
    manifest = read_manifest(onnx_root).manifest
    largest = max(sum(f["bytes"] for f in c["files"]) for c in manifest["chunks"])
    with DecoderRunner(onnx_root, memory_budget_mb=1.2 * largest / 2**20) as streaming:
        plans = {name: loader.plan for name, loader in streaming.loaders.items()}
        first, second = streaming.decode_video(z), streaming.decode(z)  # the second reloads what the first released
    assert all(plan.streamed for plan in plans.values())
    assert sum(len(plan.resident) for plan in plans.values()) < 10
    loads = [e for e in first.timeline if e["kind"] == "load" and e["chunk"] == "spatial_up_3"]
    assert len(loads) == 8  # streamed: loaded for each of the 8 micro-batches
    np.testing.assert_array_equal(first.frames, want)
    np.testing.assert_array_equal(second, want)


def test_under_a_budget_one_temporal_function_is_loaded_at_a_time(onnx_root, latent):
    """All chunks fit the budget, so they stay resident within a phase; switching to the last chunk's function
    releases the full chunk's backends (each packs the weights for itself), and the phase's end releases the
    temporal chunks before spatial runs."""
    z = np.load(latent)
    with DecoderRunner(onnx_root, memory_budget_mb=1024) as runner:
        temporal, spatial = runner.loaders[contract.TEMPORAL], runner.loaders[contract.SPATIAL]
        assert not temporal.plan.streamed
        seen = []

        def watch(loader, name):
            run = loader.run

            def wrapped(feeds, function=None):
                out = run(feeds, function)
                loaded = (len(temporal.resident), len(spatial.resident))
                seen.append((name, function, sorted({f for _, f in loader.resident}), loaded))
                return out

            loader.run = wrapped

        watch(temporal, contract.TEMPORAL)
        watch(spatial, contract.SPATIAL)
        decoded = runner.decode_video(z)
    assert seen[:2] == [(contract.TEMPORAL, FULL, [FULL], (5, 0)), (contract.TEMPORAL, LAST, [LAST], (5, 0))]
    assert seen[2:] == [(contract.SPATIAL, None, [None], (0, 5))] * 8
    with DecoderRunner(onnx_root) as resident:
        np.testing.assert_array_equal(decoded.video, resident.decode_video(z).video)


def test_uint8_frames_follow_open_soras_save_rule():
    video = np.random.default_rng(0).uniform(-1.6, 1.6, (3, 3, 5, 7)).astype(np.float32)  # [T, 3, H, W]
    video[0, 0, 0, :3] = [-1.0, 1.0, 0.0]
    x = torch.from_numpy(video).clamp(-1, 1)  # opensora/datasets/utils.py save_sample
    want = x.sub(-1).div(2).mul(255).add_(0.5).clamp_(0, 255).permute(0, 2, 3, 1).to(torch.uint8).numpy()
    got = to_uint8(video)
    assert got.shape == (3, 5, 7, 3)
    np.testing.assert_array_equal(got, want)
    assert got[0, 0, :3, 0].tolist() == [0, 255, 128]


def test_without_pyav_only_the_gif_is_written_and_said(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    frames = np.random.default_rng(1).integers(0, 256, (3, 16, 24, 3), dtype=np.uint8)
    written, note = write_video(frames, tmp_path, 24.0)
    assert written == [tmp_path / "video.gif"] and note == NO_PYAV and not (tmp_path / "video.mp4").exists()


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    ("shape", "says"),
    [((8, 7, 4, 4), "has 8 channels, the decoder takes 4-channel latents"), ((4, 5, 4, 4), "--frames 5")],
)
def test_mismatched_latent_is_refused_in_one_line(onnx_root, tmp_path, capsys, shape, says):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros(shape, np.float32))
    code, err = run_cli(["run", str(onnx_root), "--latent", str(path), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and says in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_run_without_a_latent_other_options_and_bench_are_refused(onnx_root, capsys):
    for args, says in (
        (["run", str(onnx_root)], "pass --latent PATH"),
        (["run", str(onnx_root), "--latent", "l.npy", "--steps", "3"], "--steps does not apply to video-decoder"),
        (["bench", str(onnx_root)], "does not measure video-decoder artifacts"),
    ):
        code, err = run_cli(args, capsys)
        assert code == 2 and says in err and "\n" not in err


def test_a_missing_stage_is_refused_in_one_line(onnx_root, latent, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(onnx_root, broken)
    manifest = json.loads((broken / contract.MANIFEST).read_text())
    manifest["pipelines"][contract.TEMPORAL].remove("temporal_block_2")
    (broken / contract.MANIFEST).write_text(json.dumps(manifest))
    code, err = run_cli(["run", str(broken), "--latent", str(latent)], capsys)
    assert code == 2 and "needs 'temporal_02', which no earlier chunk produces" in err and "\n" not in err


def denoiser_manifest(folder: Path, latent_shape: list[int], micro_latent_frames: int = 5) -> Path:
    """A video-denoiser manifest (its files are never opened here) with the given latent and temporal factor."""
    program = {"path": "00-embed.onnx", "role": contract.PROGRAM, "bytes": 1, "sha256": "0" * 64}
    chunk = {"name": "embed", "files": [program], "inputs": [], "outputs": []}
    video = {"latent_shape": latent_shape, "in_channels": latent_shape[1], "micro_frame_size": 17}
    manifest = {
        "schema_version": contract.SCHEMA_VERSION,
        "kind": contract.VIDEO_DENOISER,
        "target": contract.ONNX,
        "source": {"name": "stdit3-tiny", "random_weights": True},
        "chunks": [chunk],
        "pipelines": {contract.DENOISER: ["embed"]},
        "video": video | {"micro_latent_frames": micro_latent_frames},
    }
    folder.mkdir(parents=True)
    (folder / contract.MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_denoiser_and_decoder_must_match(onnx_root, tmp_path, capsys):
    tiny = build_preset("tiny-vae")
    paired = denoiser_manifest(tmp_path / "paired", [2, 4, 4, 8, 6])
    opts = ExportOptions(target="onnx", model="tiny-vae", denoiser=paired)
    assert decode_shape(opts, tiny) == decode_shape(ExportOptions(target="onnx", frames=4, height=8, width=6), tiny)
    with pytest.raises(UserError, match="differs from the denoiser's latent"):
        decode_shape(ExportOptions(target="onnx", model="tiny-vae", denoiser=paired, frames=5), tiny)
    decoder = read_manifest(onnx_root)
    check_pair(read_manifest(denoiser_manifest(tmp_path / "same", [2, 4, 7, 4, 4])), decoder)
    with pytest.raises(UserError, match="exported for 7 x 4 x 4"):
        check_pair(read_manifest(paired), decoder)
    for name, shape, factor, says in (
        ("channels", [2, 8, 7, 4, 4], 5, "4-channel latents but the denoiser makes 8"),
        ("factor", [2, 4, 7, 4, 4], 4, "temporal factor 4"),
    ):
        other = denoiser_manifest(tmp_path / name, shape, factor)
        with pytest.raises(UserError, match=says):
            check_pair(read_manifest(other), decoder)
        code, err = run_cli(["export", "--target", "onnx", "--model", "tiny-vae", "--denoiser", str(other)], capsys)
        assert code == 2 and says in err and "\n" not in err
