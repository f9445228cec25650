"""The manifest contract for multi-pipeline artifacts: named pipelines, multi-function chunks, data files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgetrim.export.build import export as export_artifact
from edgetrim.export.options import ExportOptions
from edgetrim.runtime.chunks import ChunkLoader
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import SCHEMA_PATH, digest_path, open_artifact, read_manifest


@pytest.fixture(scope="module")
def chunked_onnx(artifacts_root):
    """tiny-llava-next ONNX in 5 chunks: embed, blocks_00-00, blocks_01-01, blocks_02-02, head."""
    out = artifacts_root / "tiny-onnx-chunked"
    if not (out / "manifest.json").exists():
        export_artifact(ExportOptions(target="onnx", model="tiny-llava-next", out=out, chunks=5))
    return out


def edited_copy(src, dst, edit):
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    edit(manifest)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def pixels(root, seed=0):
    spec = read_manifest(root).chunks[0]["inputs"][0]
    return np.random.default_rng(seed).standard_normal(spec["shape"]).astype(np.float32)


def test_two_pipelines_run_in_sequence_equal_the_whole(chunked_onnx, tmp_path):
    def split(m):
        m["pipelines"] = {"front": ["embed", "blocks_00-00"], "back": ["blocks_01-01", "blocks_02-02", "head"]}

    root = edited_copy(chunked_onnx, tmp_path / "split", split)
    artifact = open_artifact(root)
    x = {"pixel_values": pixels(root)}
    with ChunkLoader(open_artifact(chunked_onnx)) as whole:
        want = whole.run(x)
    with ChunkLoader(artifact, pipeline="front", outputs=["hidden_01", "early_scores"]) as front:
        middle = front.run(x)
    assert set(middle) == {"hidden_01", "early_scores"}
    with ChunkLoader(artifact, pipeline="back", inputs=["hidden_01", "early_scores"]) as back:
        got = back.run(middle)
    np.testing.assert_array_equal(got["positions"], want["positions"])
    np.testing.assert_allclose(got["tokens"], want["tokens"], atol=1e-6, rtol=0)
    with pytest.raises(UserError, match="no pipeline 'middle'"):
        ChunkLoader(artifact, pipeline="middle")
    with pytest.raises(UserError, match="needs 'early_scores', which no earlier chunk produces"):
        ChunkLoader(artifact, pipeline="back")  # its inputs are not the first chunk's alone
    with pytest.raises(UserError, match="no chunk produces logits"):
        ChunkLoader(artifact, pipeline="front", outputs=["logits"])


def test_functions_pick_the_program_and_unknown_functions_are_refused(chunked_onnx, tmp_path):
    def functions(m):
        head = m["chunks"][-1]
        program = next(f["path"] for f in head["files"] if f["role"] == "program")
        head["functions"] = {"plain": {"file": program}, "alias": {"file": program, "method": "forward"}}

    root = edited_copy(chunked_onnx, tmp_path / "functions", functions)
    artifact = open_artifact(root)
    x = {"pixel_values": pixels(root, 1)}
    with ChunkLoader(artifact) as loader:
        plain, alias = loader.run(x), loader.run(x, function="alias")  # embed/blocks have no functions: shared
        np.testing.assert_array_equal(plain["tokens"], alias["tokens"])
        assert {k for k in loader.resident} == {(0, None), (1, None), (2, None), (3, None), (4, "plain"), (4, "alias")}
        with pytest.raises(UserError, match="chunk 'head' has no function 'tdtm' \\(it has plain, alias\\)"):
            loader.run(x, function="tdtm")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m: m.update(kind="hologram"), "'hologram' artifact, which this runtime does not know: upgrade"),
        (lambda m: m["chunks"][1].update(name="embed"), "two chunks are named 'embed'"),
        (lambda m: m.update(pipelines={"vision": ["embed", "tail"]}), "pipeline 'vision' names chunks"),
        (lambda m: m["chunks"][0].update(functions={"tdtm": {"file": "elsewhere.onnx"}}), "function whose file"),
        (lambda m: m.update(files=[{"path": "../x.npy", "role": "embedding", "bytes": 1, "sha256": "0"}]), "outside"),
    ],
    ids=["unknown-kind", "duplicate-chunk", "pipeline-unknown-chunk", "function-unlisted-file", "data-file-escapes"],
)
def test_damaged_contract_is_refused(damage, message, chunked_onnx, tmp_path):
    root = edited_copy(chunked_onnx, tmp_path / "damaged", damage)
    with pytest.raises(UserError, match=message.replace("(", "\\(").replace(")", "\\)")):
        read_manifest(root)


def test_top_level_data_files_are_verified(chunked_onnx, tmp_path):
    table = np.arange(12, dtype=np.float32).reshape(3, 4)

    def add_table(m):
        size, sha = digest_path(tmp_path / "table.npy")
        m["files"] = [{"path": "embed_tokens.npy", "role": "embedding", "bytes": size, "sha256": sha}]

    np.save(tmp_path / "table.npy", table)
    root = edited_copy(chunked_onnx, tmp_path / "data", add_table)
    shutil.copy(tmp_path / "table.npy", root / "embed_tokens.npy")
    artifact = open_artifact(root)
    np.testing.assert_array_equal(np.load(artifact.data_file("embedding")), table)
    with pytest.raises(UserError, match="lists no tokenizer file"):
        artifact.data_file("tokenizer")

    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(artifact.manifest)

    raw = bytearray((root / "embed_tokens.npy").read_bytes())
    raw[-1] ^= 0xFF
    (root / "embed_tokens.npy").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="embedding data: embed_tokens.npy fails its sha256 check"):
        open_artifact(root)
