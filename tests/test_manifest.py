"""The artifact contract: manifest.json against its published schema, and the runtime's refusals.

* every exported manifest validates against ``runtime/manifest.schema.json`` (and damaged ones do not);
* ``edgetrim run`` refuses altered, missing, truncated or too-new artifacts before loading them,
  with one line on stderr and exit code 2;
* the ONNX runtime path works with ``import torch`` blocked;
* ``edgetrim run --overlay --json`` writes a usable PNG and a consistent JSON.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from PIL import Image
from torchless import BLOCK_TORCH

from edgetrim.runtime.contract import MANIFEST, SCHEMA_VERSION
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import SCHEMA_PATH, open_artifact

TARGET_FIXTURES = ("tiny_onnx", "tiny_executorch", "tiny_coreml")
CLI = [sys.executable, "-m", "edgetrim.cli.main"]


def load_manifest(root: Path) -> dict:
    return json.loads((root / MANIFEST).read_text())


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_errors(validator: Draft202012Validator, manifest: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


def run_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300, check=False)


# --------------------------------------------------------------------------- schema


def test_schema_is_valid_draft_2020_12(validator):
    schema = validator.schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION


@pytest.mark.parametrize("fixture", TARGET_FIXTURES)
def test_exported_manifest_matches_schema(fixture, request, validator):
    root = request.getfixturevalue(fixture)
    manifest = load_manifest(root)
    assert schema_errors(validator, manifest) == []
    assert manifest["target"] == fixture.removeprefix("tiny_")
    open_artifact(root)  # the listed bytes / sha256 are those of the files on disk


@pytest.mark.parametrize("fixture", TARGET_FIXTURES)
def test_manifest_is_self_consistent(fixture, request):
    """The numbers in the manifest agree with each other and with the chunk's tensor specs."""
    m = load_manifest(request.getfixturevalue(fixture))
    red, pp, src = m["reduction"], m["preprocessing"], m["source"]
    k, p, s = red["tokens"], pp["partitions"], pp["image_size"]
    n = pp["patches_per_side"] ** 2
    assert pp["patches_per_side"] * pp["patch_size"] == s
    rows, cols = pp["grid"]
    assert p == (1 if rows * cols == 1 else 1 + rows * cols)
    assert red["budget"]["total"] == k
    assert red["budget"]["partitions"] == p
    assert red["budget"]["tokens_per_partition"] == n
    assert red["available_tokens"] == p * n
    assert red["kept_fraction"] == pytest.approx(k / (p * n))
    int_dtype = "int32" if m["target"] == "coreml" else "int64"
    (chunk,) = m["chunks"]
    assert chunk["inputs"] == [{"name": "pixel_values", "shape": [1, p, 3, s, s], "dtype": "float32"}]
    assert chunk["outputs"] == [
        {"name": "tokens", "shape": [1, k, src["token_dim"]], "dtype": "float32"},
        {"name": "positions", "shape": [1, k], "dtype": int_dtype},
        {"name": "partition_budgets", "shape": [1, p], "dtype": int_dtype},
    ]
    assert m["precision"] == ("fp16" if m["target"] == "coreml" else "fp32")


def _drop(*keys) -> Callable[[dict], None]:
    def mutate(m: dict) -> None:
        node = m
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return mutate


def _set(value, *keys) -> Callable[[dict], None]:
    def mutate(m: dict) -> None:
        node = m
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return mutate


FILE = ("chunks", 0, "files", 0)
BROKEN = {
    "no chunks": _drop("chunks"),
    "no schema_version": _drop("schema_version"),
    "no reduction": _drop("reduction"),
    "no preprocessing.mean": _drop("preprocessing", "mean"),
    "no source.token_dim": _drop("source", "token_dim"),
    "no reduction.tokens": _drop("reduction", "tokens"),
    "no file sha256": _drop(*FILE, "sha256"),
    "no file bytes": _drop(*FILE, "bytes"),
    "no chunk outputs": _drop("chunks", 0, "outputs"),
    "sha256 too short": _set("0" * 63, *FILE, "sha256"),
    "sha256 uppercase": _set("A" * 64, *FILE, "sha256"),
    "sha256 not hex": _set("g" * 64, *FILE, "sha256"),
    "negative bytes": _set(-1, *FILE, "bytes"),
    "bytes as string": _set("899897", *FILE, "bytes"),
    "absolute path": _set("/etc/passwd", *FILE, "path"),
    "path escapes": _set("../model.onnx", *FILE, "path"),
    "malformed role": _set("Weights File", *FILE, "role"),
    "extra key in file": _set("x", *FILE, "comment"),
    "extra key in chunk": _set("x", "chunks", 0, "comment"),
    "zero dimension": _set([1, 0, 96], "chunks", 0, "outputs", 0, "shape"),
    "unknown dtype": _set("float64", "chunks", 0, "outputs", 0, "dtype"),
    "empty chunks": _set([], "chunks"),
    "empty files": _set([], "chunks", 0, "files"),
    "unknown target": _set("tflite", "target"),
    "unknown precision": _set("int8", "precision"),
    "newer schema_version": _set(2, "schema_version"),
    "random_weights not bool": _set("yes", "source", "random_weights"),
    "grid of three": _set([2, 2, 2], "preprocessing", "grid"),
}


@pytest.mark.parametrize("mutate", BROKEN.values(), ids=BROKEN.keys())
def test_damaged_manifest_fails_schema(mutate, tiny_onnx, validator):
    manifest = load_manifest(tiny_onnx)
    broken = copy.deepcopy(manifest)
    mutate(broken)
    assert schema_errors(validator, manifest) == []
    assert schema_errors(validator, broken), "the schema accepted a damaged manifest"


def test_unknown_top_level_keys_are_allowed(tiny_onnx, validator):
    manifest = load_manifest(tiny_onnx)
    manifest["future_field"] = {"anything": [1, 2, 3]}
    assert schema_errors(validator, manifest) == []


# --------------------------------------------------------------------------- refusals


def _copy_artifact(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "artifact"
    shutil.copytree(src, dst)
    return dst


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _altered(art: Path, tmp_path: Path) -> tuple[Path, Path | None, list[str]]:
    _flip_middle_byte(art / "model.onnx")
    return art, None, ["sha256", "model.onnx"]


def _missing(art: Path, tmp_path: Path):
    (art / "model.onnx").unlink()
    return art, None, ["model.onnx", "missing"]


def _truncated(art: Path, tmp_path: Path):
    path = art / "model.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return art, None, ["model.onnx", "bytes"]


def _newer_schema(art: Path, tmp_path: Path):
    manifest = load_manifest(art)
    manifest["schema_version"] = 99
    (art / MANIFEST).write_text(json.dumps(manifest))
    return art, None, ["99", "newer", "upgrade"]


def _no_manifest(art: Path, tmp_path: Path):
    (art / MANIFEST).unlink()
    return art, None, [MANIFEST, str(art)]


def _no_folder(art: Path, tmp_path: Path):
    return tmp_path / "does-not-exist", None, ["does-not-exist", "not a folder"]


def _bad_image(art: Path, tmp_path: Path):
    image = tmp_path / "x.png"
    image.write_bytes(b"this is not a png\x00\xff\x13" * 40)
    return art, image, ["x.png", "cannot read"]


REFUSALS = {
    "altered": _altered,
    "missing": _missing,
    "truncated": _truncated,
    "newer schema": _newer_schema,
    "no manifest": _no_manifest,
    "no folder": _no_folder,
    "unreadable image": _bad_image,
}


@pytest.mark.parametrize("damage", REFUSALS.values(), ids=REFUSALS.keys())
def test_run_refuses_with_one_line(damage, tiny_onnx, sample_png, tmp_path):
    art, image, expected = damage(_copy_artifact(tiny_onnx, tmp_path), tmp_path)
    proc = run_cli("run", art, "--image", image or sample_png, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for word in expected:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert proc.stdout == ""


def test_intact_copy_runs(tiny_onnx, sample_png, tmp_path):
    """Control for the refusals: the undamaged copy runs."""
    art = _copy_artifact(tiny_onnx, tmp_path)
    proc = run_cli("run", art, "--image", sample_png, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_altered_artifact_is_refused_before_the_backend_opens(tiny_onnx, tmp_path, monkeypatch):
    """The sha256 check runs before the program is handed to a runtime (which might load it happily)."""
    import edgetrim.runtime.chunks as chunks
    import edgetrim.runtime.vision as vision

    def no_backend(*args, **kwargs):
        raise AssertionError("the backend was opened on an altered artifact")

    monkeypatch.setattr(chunks, "open_backend", no_backend)
    art = _copy_artifact(tiny_onnx, tmp_path)
    _flip_middle_byte(art / "model.onnx")
    with pytest.raises(UserError, match="sha256"):
        vision.VisionEncoder(art)


# --------------------------------------------------------------------------- torch-free runtime


ENCODE = r"""
from edgetrim.runtime.vision import VisionEncoder

result = VisionEncoder(sys.argv[1]).encode(sys.argv[2])
print("K", result.positions.shape[1], result.tokens.shape[1], int(result.partition_budgets.sum()))
print("TORCH", any(m == "torch" or m.startswith("torch.") for m in sys.modules))
"""

CLI_RUN = r"""
from edgetrim.cli.main import main

code = main(["run", sys.argv[1], "--image", sys.argv[2], "--json", sys.argv[3]])
print("RC", code)
print("TORCH", any(m == "torch" or m.startswith("torch.") for m in sys.modules))
"""


def test_onnx_runtime_works_without_torch(tiny_onnx, sample_png, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + ENCODE, str(tiny_onnx), str(sample_png)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    k = load_manifest(tiny_onnx)["reduction"]["tokens"]
    assert lines["K"].split() == [str(k), str(k), str(k)]
    assert lines["TORCH"] == "False"


def test_cli_run_onnx_works_without_torch(tiny_onnx, sample_png, tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + CLI_RUN, str(tiny_onnx), str(sample_png), str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "RC 0" in proc.stdout
    assert "TORCH False" in proc.stdout
    assert json.loads(out.read_text())["tokens"] == load_manifest(tiny_onnx)["reduction"]["tokens"]


# --------------------------------------------------------------------------- overlay + JSON


@pytest.mark.parametrize("fixture", ["tiny_onnx", "tiny_executorch"])
def test_run_writes_overlay_and_json(fixture, request, sample_png, tmp_path):
    art = request.getfixturevalue(fixture)
    m = load_manifest(art)
    pp = m["preprocessing"]
    k, p, n = m["reduction"]["tokens"], pp["partitions"], pp["patches_per_side"] ** 2
    proc = run_cli("run", art, "--image", sample_png, "--overlay", "out.png", "--json", "out.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    with Image.open(tmp_path / "out.png") as img:
        img.load()
        width, height = img.size
    size = pp["image_size"] * max(1, 224 // pp["image_size"])  # each view drawn at >= 224 px
    pad, label = 8, 18
    assert p == 5
    assert width == p * (size + pad) + pad  # the P views side by side
    assert height == size + label + pad

    payload = json.loads((tmp_path / "out.json").read_text())
    positions = np.asarray(payload["positions"])
    budgets = np.asarray(payload["partition_budgets"])
    assert payload["tokens"] == k
    assert positions.shape == (k,)
    assert np.all(np.diff(positions) > 0), "positions are not strictly ascending"
    assert positions.min() >= 0 and positions.max() < p * n
    assert budgets.shape == (p,)
    assert int(budgets.sum()) == k
    assert np.all((budgets >= 0) & (budgets <= n))
    # each partition's budget is the number of kept positions that fall inside it
    assert np.bincount(positions // n, minlength=p).tolist() == budgets.tolist()


# --------------------------------------------------------------------------- damaged manifests, odd arguments


def _manifest_edit(edit: Callable[[dict], None]):
    def damage(art: Path, tmp_path: Path):
        manifest = load_manifest(art)
        edit(manifest)
        (art / MANIFEST).write_text(json.dumps(manifest))
        return art, []

    return damage


def _absolute_file_path(art: Path, tmp_path: Path):
    outside = tmp_path / "outside.onnx"
    shutil.move(art / "model.onnx", outside)
    _set(str(outside), *FILE, "path")(manifest := load_manifest(art))
    (art / MANIFEST).write_text(json.dumps(manifest))
    return art, []


def _json_in_missing_folder(art: Path, tmp_path: Path):
    return art, ["--json", tmp_path / "new" / "dir" / "out.json"]


def _overlay_unknown_extension(art: Path, tmp_path: Path):
    return art, ["--overlay", tmp_path / "out.xyz"]


REFUSED = (2,)
BUG_CASES = [
    pytest.param(
        _manifest_edit(_drop("chunks", 0, "files")),
        REFUSED,
        None,
        id="chunk without files",
    ),
    pytest.param(
        _manifest_edit(_drop(*FILE, "sha256")),
        REFUSED,
        None,
        id="file without sha256",
    ),
    pytest.param(
        _manifest_edit(_set("weights", *FILE, "role")),
        REFUSED,
        None,
        id="no program file",
    ),
    pytest.param(
        _manifest_edit(_set("1", "schema_version")),
        REFUSED,
        "newer",
        id="string schema_version",
    ),
    pytest.param(
        _absolute_file_path,
        REFUSED,
        None,
        id="absolute file path",
    ),
    pytest.param(
        _json_in_missing_folder,
        (0, 2),  # creating the folder, as --overlay does, is a fine fix too
        None,
        id="json in missing folder",
    ),
    pytest.param(
        _overlay_unknown_extension,
        (0, 2),
        None,
        id="overlay unknown extension",
    ),
]


@pytest.mark.parametrize(("damage", "exit_codes", "wrong_word"), BUG_CASES)
def test_run_reports_damage_in_one_line(damage, exit_codes, wrong_word, tiny_onnx, sample_png, tmp_path):
    """Bad manifests or arguments: handled (exit 0) or one line and exit 2, never a traceback."""
    art, extra = damage(_copy_artifact(tiny_onnx, tmp_path), tmp_path)
    proc = run_cli("run", art, "--image", sample_png, *extra, cwd=tmp_path)
    assert "Traceback" not in proc.stderr
    assert proc.returncode in exit_codes, proc.stderr
    if proc.returncode == 2:
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    if wrong_word:
        assert wrong_word not in proc.stderr, proc.stderr
