"""Chunked artifacts: equal to unchunked, streamed within a memory budget, refused when damaged."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgetrim.export.build import export as export_artifact
from edgetrim.export.options import ExportOptions
from edgetrim.runtime.chunks import MB, ChunkLoader, ChunkLoadError, chunk_bytes, plan_memory
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import open_artifact
from edgetrim.runtime.vision import VisionEncoder


@pytest.fixture(scope="module", params=["onnx", "executorch"])
def chunked(request, artifacts_root, tiny_onnx, tiny_executorch):
    """(unchunked, chunked) tiny-llava-next artifacts of one target; 5 chunks: embed, 3 block groups, head."""
    target = request.param
    out = artifacts_root / f"tiny-{target}-chunked"
    if not (out / "manifest.json").exists():
        export_artifact(ExportOptions(target=target, model="tiny-llava-next", out=out, chunks=5))
    return (tiny_onnx if target == "onnx" else tiny_executorch), out


def pixels(root, seed=0):
    spec = open_artifact(root).chunks[0]["inputs"][0]
    return np.random.default_rng(seed).standard_normal(spec["shape"]).astype(np.float32)


def test_chunk_layout_and_io(chunked):
    _, root = chunked
    artifact = open_artifact(root)
    names = [c["name"] for c in artifact.chunks]
    assert names == ["embed", "blocks_00-00", "blocks_01-01", "blocks_02-02", "head"]
    outputs = {o["name"] for c in artifact.chunks for o in c["outputs"]}
    assert {"early_scores", "select_scores", "tokens", "positions"} <= outputs
    # early scores come out of the first block group, selection scores out of the last
    assert [o["name"] for o in artifact.chunks[1]["outputs"]] == ["hidden_01", "early_scores"]
    assert [o["name"] for o in artifact.chunks[3]["outputs"]] == ["hidden_03", "select_scores"]
    if artifact.target == "onnx":
        assert all(len(c["files"]) == 2 and "optimized" not in c for c in artifact.chunks)  # portable graphs


def test_chunked_equals_unchunked(chunked):
    whole, parts = chunked
    with ChunkLoader(open_artifact(whole)) as a, ChunkLoader(open_artifact(parts)) as b:
        for seed in range(3):
            x = {"pixel_values": pixels(whole, seed)}
            want, got = a.run(x), b.run(x)
            np.testing.assert_allclose(got["tokens"], want["tokens"], atol=1e-5, rtol=0)
            np.testing.assert_array_equal(got["positions"], want["positions"])
            np.testing.assert_array_equal(got["partition_budgets"], want["partition_budgets"])


def test_streaming_matches_resident_over_repeated_invocations(chunked):
    _, root = chunked
    artifact = open_artifact(root)
    sizes = [chunk_bytes(c) for c in artifact.chunks]
    budget = (sizes[0] + sum(sorted(sizes[1:])[-2:])) / MB * 1.01  # embed resident + two streaming slots
    x = {"pixel_values": pixels(root)}
    with ChunkLoader(artifact) as resident, ChunkLoader(artifact, budget) as streaming:
        assert streaming.plan.resident == (0,) and streaming.plan.overlap
        want = resident.run(x)
        for _ in range(3):
            got = streaming.run(x)
            np.testing.assert_array_equal(got["tokens"], want["tokens"])
        loads = [e.chunk for e in streaming.timeline.events if e.kind == "load"]
    assert loads.count("embed") == 1  # resident: loaded once
    for name in ("blocks_00-00", "head"):  # streamed: loaded for every invocation (+1 prefetched ahead)
        assert loads.count(name) >= 3


def test_memory_plan():
    chunks = [{"name": f"c{i}", "files": [{"bytes": int(mb * MB)}]} for i, mb in enumerate([1, 10, 10, 10, 2])]
    assert plan_memory(chunks, None).streamed == ()
    assert plan_memory(chunks, 40).streamed == ()  # everything fits
    two = plan_memory(chunks, 21)
    assert two.resident == (0,) and two.streamed == (1, 2, 3, 4) and two.overlap
    one = plan_memory(chunks, 12)  # room for one streamed chunk only: no overlap
    assert one.streamed and not one.overlap
    with pytest.raises(UserError, match=r"smaller than the largest chunk .*at least 10.0"):
        plan_memory(chunks, 5)


def test_loader_thread_error_names_the_chunk(chunked, tmp_path, monkeypatch):
    _, root = chunked
    monkeypatch.setenv("EDGETRIM_CACHE", str(tmp_path / "cache"))  # empty: ONNX programs are read, not cached
    copy = tmp_path / "a"
    shutil.copytree(root, copy)
    artifact = open_artifact(copy)  # verified now; the file is damaged after verification
    sizes = [chunk_bytes(c) for c in artifact.chunks]
    loader = ChunkLoader(artifact, max(sizes) * 2.5 / MB)
    x = {"pixel_values": pixels(copy)}
    program = artifact.file(artifact.chunks[2], "program")
    program.write_bytes(b"not a program")
    with pytest.raises(ChunkLoadError, match="blocks_01-01"):
        loader.run(x)
    loader.close()


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "edgetrim.cli.main", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def test_cli_refuses_misaligned_chunks_and_small_budget(chunked, tmp_path, sample_png):
    _, root = chunked
    copy = tmp_path / "a"
    shutil.copytree(root, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["chunks"][2]["inputs"][0]["shape"][-1] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("run", copy, "--image", sample_png, cwd=tmp_path)
    assert proc.returncode == 2 and "do not line up" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("run", root, "--image", sample_png, "--memory-budget", "0.001", cwd=tmp_path)
    assert proc.returncode == 2 and "at least" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_refuses_a_flipped_byte_in_any_chunk(chunked, tmp_path, sample_png):
    _, root = chunked
    copy = tmp_path / "a"
    shutil.copytree(root, copy)
    target = open_artifact(copy).file(open_artifact(copy).chunks[3], "program")
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    proc = run_cli("run", copy, "--image", sample_png, cwd=tmp_path)
    assert proc.returncode == 2 and "sha256" in proc.stderr and "blocks_02-02" in proc.stderr


def test_vision_encoder_streams_under_a_budget(chunked, sample_png):
    whole, root = chunked
    want = VisionEncoder(whole).encode(sample_png)
    sizes = [chunk_bytes(c) for c in open_artifact(root).chunks]
    got = VisionEncoder(root, memory_budget_mb=sum(sorted(sizes)[-2:]) / MB).encode(sample_png)
    np.testing.assert_allclose(got.tokens, want.tokens, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(got.positions, want.positions)


def test_bench_writes_json_markdown_and_timeline(chunked, tmp_path):
    _, root = chunked
    proc = run_cli("bench", root, "--repeats", "2", "--out", tmp_path / "b", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert set(report["results"]) == {"resident", "resident-lean", "streaming", "naive"}
    assert 0.0 <= report["summary"]["load_overlap_fraction"] <= 1.0
    streaming = report["results"]["streaming"]
    assert streaming["plan"]["overlap"] and streaming["peak_rss_mb"] > 0
    assert all(v["compute_ms"] > 0 for v in report["results"]["resident"]["per_chunk"].values())
    assert "| streaming |" in (tmp_path / "b" / "bench.md").read_text()
    from PIL import Image

    assert Image.open(tmp_path / "b" / "timeline.png").size[0] == 1400
