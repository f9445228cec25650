"""Refusals and failure modes across kinds: a flag for another kind, oversized images, links out of an
artifact, stale staging folders, a runtime-only install, internal bugs vs user errors, kind checks in
every runner, the bounded chunk timeline, the Jetson sample's real providers, the presets table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from torchless import BLOCK_TORCH

from edgetrim.cli.main import main
from edgetrim.export.reducers.budget import parse_budget
from edgetrim.runtime import chunks
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import open_artifact
from edgetrim.runtime.vision import VisionEncoder

ROOT = Path(__file__).parents[1]
CLI_MAIN = "from edgetrim.cli.main import main\n\nsys.exit(main(sys.argv[1:]))\n"


def one_line(capsys, code: int, expected: int, *hints: str) -> str:
    captured = capsys.readouterr()
    assert code == expected, (code, captured.out, captured.err)
    message = captured.err.strip()
    assert len(message.splitlines()) == 1 and message.startswith("error:"), captured.err
    assert "Traceback" not in captured.err
    for hint in hints:
        assert hint in message, (hint, message)
    return message


# ---------------------------------------------------------------------------------- flags of another kind

VISION_FLAGS = [
    ["--reduce", "none"],
    ["--budget", "0.3"],
    ["--alpha", "0.4"],
    ["--grid", "1x1"],
    ["--image-size", "64"],
    ["--feature-layer", "-2"],
    ["--chunks", "3"],
    ["--chunk-mb", "5"],
]
LM_FLAGS = [["--prefill-length", "40"], ["--max-length", "80"], ["--llm-chunks", "2"], ["--prefill-buckets", "none"]]
LM_FLAGS += [["--kv-cache", "io"], ["--llm-ops", "standard"]]
VLM_FLAGS = [["--template", "USER: <image> {prompt}"], ["--with-llm"]]
QUANTIZE_FLAGS = [["--quantize", "int8"]]
VISION_GATE_FLAGS = [["--calib-images", "calib"], ["--gate-overlap", "0.9"], ["--gate-token-cosine", "0.9"]]
PROMPT_FLAGS = [["--calib-prompts", "p.txt"]]
LM_GATE_FLAGS = [["--gate-top1", "0.9"], ["--gate-logit-cosine", "0.9"], ["--gate-greedy", "0.5"]]
DENOISER_GATE_FLAGS = [["--gate-velocity-cosine", "0.9"]]
CAPTION_GATE_FLAGS = [["--gate-caption-cosine", "0.9"]]
LATENT_FLAGS = [["--frames", "4"], ["--height", "8"], ["--width", "8"]]
VIDEO_FLAGS = [["--cfg-batch", "1"]]
DECODER_FLAGS = [["--micro-batch", "2"], ["--denoiser", "video-artifact"]]
TEXT_FLAGS = [["--caption-length", "8"]]
MODELS = {"vision-encoder": "tiny-clip", "vlm": "tiny-vlm", "language-model": "tiny-qwen2"}
MODELS |= {"video-denoiser": "stdit3-tiny", "text-encoder": "t5-tiny", "video-decoder": "tiny-vae"}
TAKERS = [  # (flags, the kinds that take them)
    (VISION_FLAGS, {"vision-encoder", "vlm"}),
    (LM_FLAGS, {"vlm", "language-model"}),
    (VLM_FLAGS, {"vlm"}),
    (QUANTIZE_FLAGS, {"vision-encoder", "vlm", "language-model", "video-denoiser", "text-encoder"}),
    (VISION_GATE_FLAGS, {"vision-encoder", "vlm"}),
    (PROMPT_FLAGS, {"vlm", "language-model", "text-encoder"}),
    (LM_GATE_FLAGS, {"vlm", "language-model"}),
    (DENOISER_GATE_FLAGS, {"video-denoiser"}),
    (CAPTION_GATE_FLAGS, {"text-encoder"}),
    (LATENT_FLAGS, {"video-denoiser", "video-decoder"}),
    (VIDEO_FLAGS, {"video-denoiser"}),
    (DECODER_FLAGS, {"video-decoder"}),
    (TEXT_FLAGS, {"text-encoder"}),
]
MISFITS = [
    pytest.param(flag, kind, id=f"{flag[0]}-on-{kind}")
    for flags, takers in TAKERS
    for flag in flags
    for kind in MODELS
    if kind not in takers
]


@pytest.mark.parametrize(("flag", "kind"), MISFITS)
def test_every_flag_of_another_kind_is_refused(flag, kind, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["export", "--target", "onnx", "--model", MODELS[kind], *flag, "--out", str(out)])
    one_line(capsys, code, 2, flag[0], kind, "drop it")
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_run_and_bench_flags_of_another_kind_are_refused(tiny_onnx, sample_png, capsys):
    for args, flag in (
        (["--image", str(sample_png), "--prompt", "hi"], "--prompt"),
        (["--image", str(sample_png), "--steps", "4"], "--steps"),
        (["--prompt-text", "a boat"], "--prompt-text"),
    ):
        one_line(capsys, main(["run", str(tiny_onnx), *args]), 2, flag, "vision-encoder")
    for args, flag in ((["--budgets", "1.0,0.2"], "--budgets"), (["--step-repeats", "1"], "--step-repeats")):
        one_line(capsys, main(["bench", str(tiny_onnx), *args]), 2, flag, "vision-encoder")


def test_library_messages_name_parameters_and_the_cli_names_flags(tmp_path, capsys):
    with pytest.raises(UserError) as caught:
        parse_budget("abc")
    assert "budget 'abc' is not a number" in str(caught.value) and "--" not in str(caught.value)
    code = main(["export", "--target", "onnx", "--model", "tiny-clip", "--budget", "abc", "--out", str(tmp_path / "o")])
    one_line(capsys, code, 2, "--budget 'abc' is not a number")


# ---------------------------------------------------------------------------------- images and artifacts


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height (1-bit grey) and holds one empty row: Pillow reads the size first."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_a_30000_pixel_square_image_is_refused_in_one_line(tiny_onnx, tmp_path, capsys):
    bomb = tmp_path / "huge.png"
    bomb.write_bytes(png_header(30000, 30000))
    one_line(capsys, main(["run", str(tiny_onnx), "--image", str(bomb)]), 2, "huge.png", "pixels", "downscale")


def test_a_file_linking_outside_the_artifact_is_refused(tiny_onnx, tmp_path):
    copy = tmp_path / "artifact"
    shutil.copytree(tiny_onnx, copy)
    outside = tmp_path / "elsewhere.onnx.data"
    shutil.move(copy / "model.onnx.data", outside)
    (copy / "model.onnx.data").symlink_to(outside)  # same bytes, same sha256: only the location is wrong
    with pytest.raises(UserError, match="resolves outside the artifact folder"):
        open_artifact(copy)
    inside = tmp_path / "inside"
    shutil.copytree(tiny_onnx, inside)
    (inside / "keep.data").write_bytes((inside / "model.onnx.data").read_bytes())
    (inside / "model.onnx.data").unlink()
    (inside / "model.onnx.data").symlink_to(inside / "keep.data")  # a link that stays inside is fine
    open_artifact(inside)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_staging_folders_of_dead_exports_are_removed_and_reported(tmp_path, capsys):
    dead = tmp_path / ".out.partial-dead1"
    dead.mkdir()
    (dead / ".owner").write_text(json.dumps({"pid": dead_pid(), "started": "1"}))
    (dead / "00-embed.onnx").write_bytes(b"half written")
    orphan = tmp_path / ".out.partial-orphan"  # killed before it wrote its owner
    orphan.mkdir()
    alive = tmp_path / ".out.partial-alive"  # an export still running (this process) keeps its folder
    alive.mkdir()
    (alive / ".owner").write_text(json.dumps({"pid": os.getpid()}))
    out = tmp_path / "out"
    assert main(["export", "--target", "onnx", "--model", "tiny-clip", "--no-validate", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert not dead.exists() and not orphan.exists() and alive.exists()
    report = json.loads((out / "report.json").read_text())
    assert sorted(report["removed_stale"]) == sorted([str(dead), str(orphan)])
    assert "cleaned" in printed and "died" in printed


@pytest.mark.parametrize("command", [["export", "--target", "onnx"], ["presets"]])
def test_runtime_only_install_names_the_extra(command, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + CLI_MAIN, *command],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'edgetrim[export]'" in lines[0] and "torch" in lines[0], proc.stderr
    assert not list(tmp_path.iterdir())


def test_an_internal_bug_exits_1_not_as_a_user_error(tmp_path, capsys, monkeypatch):
    from edgetrim.export.targets import executorch

    monkeypatch.setattr(executorch, "MISSING_KERNELS", ("gather",))  # as if the graph used an op with no kernel
    args = ["export", "--target", "executorch", "--model", "tiny-clip", "--out", str(tmp_path / "o")]
    one_line(capsys, main(args), 1, "internal error", "bug in edgetrim", "aten.gather")
    assert not (tmp_path / "o").exists()


def test_failed_validation_exits_1_with_its_type(tmp_path, capsys):
    args = ["export", "--target", "onnx", "--model", "tiny-clip", "--atol", "1e-12", "--out", str(tmp_path / "o")]
    one_line(capsys, main(args), 1, "validation failed (ToleranceExceeded)", "tokens differs")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------- kinds


def test_t5_coreml_is_fp32_and_spec_checked(tmp_path, capsys):
    out = tmp_path / "t5-coreml"
    assert main(["export", "--target", "coreml", "--model", "t5-tiny", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert manifest["precision"] == "fp32"
    assert report["validation"]["status"] == "spec-only"
    assert [c["case"] for c in report["validation"]["cases"]] == [
        "spec:embed",
        "spec:block_00",
        "spec:block_01",
        "spec:final",
    ]
    capsys.readouterr()
    code = main(["export", "--target", "coreml", "--model", "t5-tiny", "--fp16", "--out", str(tmp_path / "x")])
    one_line(capsys, code, 2, "--fp16", "overflow")


def test_a_language_model_artifact_runs_as_one_and_is_refused_elsewhere(tmp_path, sample_png, capsys):
    out = tmp_path / "lm"
    assert main(["export", "--target", "onnx", "--model", "tiny-qwen2", "--out", str(out)]) == 0
    capsys.readouterr()
    one_line(capsys, main(["run", str(out), "--image", str(sample_png)]), 2, "--image", "language-model")
    with pytest.raises(UserError, match="is a language-model artifact; this takes vision-encoder"):
        VisionEncoder(out)
    assert main(["run", str(out), "--prompt", "The quick brown fox", "--max-new-tokens", "3"]) == 0
    assert "3 tokens" in capsys.readouterr().out


def test_the_chunk_timeline_is_bounded(tiny_onnx, monkeypatch):
    monkeypatch.setattr(chunks, "TIMELINE_EVENTS", 10, raising=False)
    artifact = open_artifact(tiny_onnx)
    spec = artifact.chunks[0]["inputs"][0]
    import numpy as np

    x = {spec["name"]: np.zeros(spec["shape"], np.float32)}
    with chunks.ChunkLoader(artifact) as loader:
        for _ in range(30):  # a decode loop runs its pipeline once per token
            loader.run(x)
        assert len(loader.timeline.events) == 10
        assert loader.timeline.events[-1].invocation == 29


def test_presets_table_fits_80_columns():
    proc = subprocess.run(
        [sys.executable, "-m", "edgetrim.cli.main", "presets"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    from edgetrim.export.presets import PRESETS

    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for name, preset in PRESETS.items():
        row = next((line for line in lines if re.search(rf"\s{re.escape(name)}( \*)?\s", line)), None)
        assert row is not None, name  # the whole name on one line
        assert preset.kind in row


def test_code_speaks_of_the_project_only():
    pattern = re.compile(r"\bissues? \d|\bthe issue\b", re.IGNORECASE)
    found = [
        f"{path.relative_to(ROOT)}:{i}"
        for folder in ("export", "runtime", "calib", "cli", "apps")
        for path in (ROOT / folder).rglob("*.py")
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []
