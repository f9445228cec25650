"""Portable ONNX artifacts: standard ops on disk, ONNX Runtime's fusions applied at load and cached."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgetrim.cli.main import main
from edgetrim.runtime import onnx_cache
from edgetrim.runtime.chunks import ChunkLoader, example_feeds, open_chunk
from edgetrim.runtime.load_bench import preoptimize
from edgetrim.runtime.manifest import open_artifact

STANDARD = {"", "ai.onnx"}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(onnx_cache.CACHE_ENV, str(root))
    return root


def test_shipped_graphs_hold_standard_ops_only(tiny_onnx):
    artifact = open_artifact(tiny_onnx)
    for chunk in artifact.chunks:
        assert "optimized" not in chunk
        model = onnx.load(str(artifact.program(chunk)[0]), load_external_data=False)
        assert {n.domain for n in model.graph.node} <= STANDARD, chunk["name"]


def test_first_load_optimizes_into_the_cache_and_the_second_opens_the_copy(tiny_onnx, cache):
    artifact = open_artifact(tiny_onnx)
    chunk = artifact.chunks[0]  # the whole encoder: attention and layer norms, which ONNX Runtime fuses
    sha = next(f["sha256"] for f in chunk["files"] if f["path"] == artifact.program(chunk)[0].name)
    feeds = example_feeds(chunk, seed=3)
    first = open_chunk(artifact, chunk, None)
    assert first.cache == "miss"
    entry = onnx_cache.cached_graph(sha, ["CPUExecutionProvider"])
    assert entry.exists() and entry.parent.parent == cache / "onnx"
    assert json.loads((entry.parent / onnx_cache.ENTRY).read_text())["program_sha256"] == sha
    fused = onnx.load(str(entry), load_external_data=False)
    assert "com.microsoft" in {n.domain for n in fused.graph.node}  # the CPU provider's fusions, not shipped
    assert not list((cache / "onnx").glob(".*.partial"))
    second = open_chunk(artifact, chunk, None)
    assert second.cache == "hit"
    want, got = first.run(feeds), second.run(feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6, rtol=0)
    # and equal to the portable graph run without ONNX Runtime's optimizations
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    plain = ort.InferenceSession(str(artifact.program(chunk)[0]), options, providers=["CPUExecutionProvider"])
    for name, value in zip(want, plain.run(list(want), feeds), strict=True):
        np.testing.assert_allclose(want[name], value, atol=1e-5, rtol=0)


def test_cache_keys_follow_program_providers_and_runtime_version(monkeypatch):
    import onnxruntime as ort

    cpu = onnx_cache.cached_graph("ab" * 32, ["CPUExecutionProvider"])
    assert onnx_cache.cached_graph("ab" * 32, ["CPUExecutionProvider"]) == cpu
    assert onnx_cache.cached_graph("cd" * 32, ["CPUExecutionProvider"]) != cpu
    assert onnx_cache.cached_graph("ab" * 32, ["CUDAExecutionProvider", "CPUExecutionProvider"]) != cpu
    trt = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_cache.optimization_level(trt) == onnx_cache.BASIC  # TensorRT fuses standard ops itself
    assert onnx_cache.optimization_level(["CPUExecutionProvider"]) == onnx_cache.EXTENDED
    monkeypatch.setattr(ort, "__version__", "0.0.1")
    assert onnx_cache.cached_graph("ab" * 32, ["CPUExecutionProvider"]) != cpu


def test_a_crashed_partial_entry_is_never_used_and_an_unwritable_cache_still_loads(tiny_onnx, cache, monkeypatch):
    artifact = open_artifact(tiny_onnx)
    chunk = artifact.chunks[0]
    sha = next(f["sha256"] for f in chunk["files"] if f["path"] == artifact.program(chunk)[0].name)
    final = onnx_cache.cached_graph(sha, ["CPUExecutionProvider"]).parent
    crashed = final.with_name(f".{final.name}.999999.partial")
    crashed.mkdir(parents=True)
    (crashed / onnx_cache.MODEL).write_bytes(b"half written")
    with ChunkLoader(artifact) as loader:
        tokens = loader.run(example_feeds(chunk, seed=1))["tokens"]
    assert (final / onnx_cache.MODEL).exists()
    assert (crashed / onnx_cache.MODEL).read_bytes() == b"half written"  # another pid's: left alone, not read
    blocked = cache.parent / "not-a-folder"
    blocked.write_text("x")
    monkeypatch.setenv(onnx_cache.CACHE_ENV, str(blocked))
    with ChunkLoader(artifact) as loader:
        np.testing.assert_allclose(loader.run(example_feeds(chunk, seed=1))["tokens"], tokens, atol=1e-6, rtol=0)


def test_a_pre_optimized_chunk_of_an_older_artifact_opens_as_it_is(tiny_onnx, tmp_path, cache):
    artifact = open_artifact(tiny_onnx)
    chunk = artifact.chunks[0]
    old = preoptimize(artifact.program(chunk)[0], tmp_path / "old.onnx")
    from edgetrim.runtime.backends import OnnxBackend

    backend = OnnxBackend(old, [o["name"] for o in chunk["outputs"]], preoptimized=True)
    assert backend.cache == "off" and not (cache / "onnx").exists()  # (cache/verified holds the verify stamp)
    feeds = example_feeds(chunk, seed=2)
    want = open_chunk(artifact, chunk, None).run(feeds)
    for name, value in backend.run(feeds).items():
        np.testing.assert_allclose(value, want[name], atol=1e-5, rtol=0)


def test_bench_onnx_load_measures_every_program_side_by_side(tiny_onnx, tmp_path, cache, capsys):
    out = tmp_path / "bench"
    assert main(["bench", str(tiny_onnx), "--onnx-load", "--runs", "1", "--repeats", "2", "--out", str(out)]) == 0
    report = json.loads((out / "load.json").read_text())
    artifact = open_artifact(tiny_onnx)
    assert list(report["programs"]) == [c["name"] for c in artifact.chunks]
    for figures in report["programs"].values():
        assert all(figures[f"{m}_{w}_ms"] > 0 for m in ("cold", "cached", "preoptimized") for w in ("load", "run"))
        assert figures["max_abs_diff"] < 1e-4
    assert set(report["ratios"]) == {"cold_load_vs_preoptimized", "cached_load_vs_preoptimized",
                                      "cached_run_vs_preoptimized"}
    printed = capsys.readouterr().out
    assert "cached load" in printed and "vs pre-optimized" in printed and (out / "load.md").exists()


def test_bench_onnx_load_refusals(tiny_onnx, tiny_executorch, capsys):
    for args, hint in (
        ([str(tiny_executorch), "--onnx-load"], "executorch"),
        ([str(tiny_onnx), "--onnx-load", "--budgets", "1.0"], "--budgets"),
    ):
        assert main(["bench", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:") and hint in err, err


def test_a_second_edgetrim_run_opens_every_program_from_the_cache(tiny_onnx, sample_png, tmp_path, cache, capsys):
    programs = len(open_artifact(tiny_onnx).chunks)
    records = []
    for i in range(2):
        out = tmp_path / f"run{i}.json"
        assert main(["run", str(tiny_onnx), "--image", str(sample_png), "--json", str(out)]) == 0
        records.append(json.loads(out.read_text()))
    assert records[0]["graph_cache"] == {"miss": programs}
    assert records[1]["graph_cache"] == {"hit": programs}
    assert records[1]["positions"] == records[0]["positions"]
    assert f"{programs} from the optimized-graph cache" in capsys.readouterr().out
