"""Bad ``edgetrim export`` input: one ``error:`` line on stderr, exit 2, no traceback, nothing written.

Every case runs the real CLI in a subprocess (``python -m edgetrim.cli.main``) from ``tmp_path``, with
``--target onnx`` and the ``tiny-clip`` preset (64x64 views, patch 8: 64 tokens per view, 2x2 grid ->
5 views, 320 tokens), and must fail before any export work starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

OUT = "out"
EXIT_USER_ERROR = 2


def edgetrim_export(cwd: Path, *args: str, target: str = "onnx", out: str = OUT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "edgetrim.cli.main", "export", "--target", target, *args, "--out", out],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def leftovers(root: Path, out: str = OUT) -> list[str]:
    """The --out folder and any staging / backup folder an export could leave beside it."""
    found = [p for p in (root / out,) if p.exists()]
    found += list(root.glob(f".{out}.partial-*")) + list(root.glob(f".{out}.old"))
    return [str(p) for p in found]


def assert_user_error(proc: subprocess.CompletedProcess, root: Path, *hints: str, out: str = OUT) -> str:
    assert "Traceback" not in proc.stdout and "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == EXIT_USER_ERROR, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout.strip() == "", proc.stdout
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert message.startswith("error:"), message
    for hint in hints:
        assert hint in message, f"{hint!r} not in {message!r}"
    assert leftovers(root, out) == [], leftovers(root, out)
    return message


# --- --model -----------------------------------------------------------------------------------------


def test_unknown_preset_lists_presets(tmp_path):
    proc = edgetrim_export(tmp_path, "--model", "no-such-preset")
    assert_user_error(proc, tmp_path, "no-such-preset", "unknown preset", "tiny-clip", "clip-vit-b16")


def test_missing_folder(tmp_path):
    proc = edgetrim_export(tmp_path, "--model", "./does/not/exist")
    assert_user_error(proc, tmp_path, "does/not/exist", "does not exist")


def test_hub_id_offline_names_the_id(tmp_path):
    proc = edgetrim_export(tmp_path, "--model", "someone/some-model")
    assert_user_error(proc, tmp_path, "'someone/some-model'", "Hugging Face Hub")


def test_unsupported_architecture(tmp_path):
    from transformers import BertConfig, BertModel

    config = BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=100
    )
    BertModel(config).save_pretrained(tmp_path / "bert")
    proc = edgetrim_export(tmp_path, "--model", "./bert")
    assert_user_error(proc, tmp_path, "BertModel", "not supported", "CLIPVisionModel")


def test_folder_without_config(tmp_path):
    folder = tmp_path / "weights-only"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    proc = edgetrim_export(tmp_path, "--model", "./weights-only")
    assert_user_error(proc, tmp_path, "config.json", "save_pretrained")


# --- --budget ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "hints"),
    [
        ("0", ("--budget 0", "positive")),
        ("-0.1", ("--budget -0.1", "(0, 1]")),
        ("1.5", ("--budget 1.5", "(0, 1]")),
        ("abc", ("'abc'", "not a number")),
        ("400", ("K=400", "at most 320")),  # tiny-clip with a 2x2 grid has 5 x 64 = 320 tokens
    ],
    ids=["zero", "negative", "above-one", "not-a-number", "more-than-tokens"],
)
def test_bad_budget(tmp_path, budget, hints):
    proc = edgetrim_export(tmp_path, "--model", "tiny-clip", f"--budget={budget}")
    assert_user_error(proc, tmp_path, *hints)


# --- --grid / --image-size ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "hints"),
    [
        (("--grid", "6x6", "--image-size", "32"), ("--grid 6x6", "at most 4x4")),
        (("--grid", "3by3"), ("'3by3'", "ROWSxCOLS")),
        (("--grid", "0x2"), ("--grid 0x2", "1x1")),
        (("--image-size", "60"), ("--image-size 60", "multiple of the patch size 8")),
        (("--image-size", "0"), ("--image-size 0", "positive")),
    ],
    ids=["grid-too-fine", "grid-not-rowsxcols", "grid-zero", "image-size-not-multiple", "image-size-zero"],
)
def test_bad_geometry(tmp_path, args, hints):
    proc = edgetrim_export(tmp_path, "--model", "tiny-clip", *args)
    assert_user_error(proc, tmp_path, *hints)


# --- --target / precision ----------------------------------------------------------------------------


def test_fp16_with_onnx(tmp_path):
    proc = edgetrim_export(tmp_path, "--model", "tiny-clip", "--fp16")
    assert_user_error(proc, tmp_path, "--fp16", "coreml", "drop --fp16")


def test_unknown_target(tmp_path):
    proc = edgetrim_export(tmp_path, "--model", "tiny-clip", target="tflite")
    assert_user_error(proc, tmp_path, "'tflite'", "onnx, coreml, executorch")


# --- --out -------------------------------------------------------------------------------------------


def test_out_is_foreign_folder_left_untouched(tmp_path):
    foreign = tmp_path / "mine"
    (foreign / "sub").mkdir(parents=True)
    (foreign / "notes.txt").write_text("keep me\n")
    (foreign / "sub" / "data.bin").write_bytes(b"\x00\x01\x02")
    before = {p.relative_to(foreign): p.read_bytes() for p in foreign.rglob("*") if p.is_file()}

    proc = edgetrim_export(tmp_path, "--model", "tiny-clip", out="mine")

    # the folder itself must still be there: check the message and the staging leftovers by hand
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode == EXIT_USER_ERROR, (proc.returncode, proc.stderr)
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("error:"), proc.stderr
    assert "--out mine" in message and "not an edgetrim artifact" in message, message
    after = {p.relative_to(foreign): p.read_bytes() for p in foreign.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt", "sub"]
    assert list(tmp_path.glob(".mine.*")) == []


# --- positive controls -------------------------------------------------------------------------------


def read_manifest(root: Path) -> dict:
    return json.loads((root / OUT / "manifest.json").read_text())


def assert_exported(proc: subprocess.CompletedProcess, root: Path) -> dict:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert (root / OUT / "model.onnx").is_file()
    assert list(root.glob(f".{OUT}.*")) == [], "staging folder left behind"
    return read_manifest(root)


def test_valid_absolute_budget(tmp_path):
    proc = edgetrim_export(tmp_path, "--model", "tiny-clip", "--budget", "40", "--grid", "2x2")
    manifest = assert_exported(proc, tmp_path)
    assert manifest["reduction"]["method"] == "hired"
    assert manifest["reduction"]["tokens"] == 40
    assert manifest["reduction"]["available_tokens"] == 320
    assert manifest["preprocessing"]["grid"] == [2, 2]


def test_valid_reduce_none_keeps_every_token(tmp_path):
    proc = edgetrim_export(tmp_path, "--model", "tiny-clip", "--reduce", "none", "--no-validate")
    manifest = assert_exported(proc, tmp_path)
    assert manifest["reduction"]["method"] == "none"
    assert manifest["reduction"]["tokens"] == 320
