"""The Jetson app (apps/jetson): provider options as data, and the app run torch-free on the CPU provider."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
from torchless import BLOCK_TORCH

from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import open_artifact
from edgetrim_jetson import providers as gpu

APP = BLOCK_TORCH + "from edgetrim_jetson.app import main\n\nsys.exit(main(sys.argv[1:]))\n"
SHA = "0123456789abcdef" + "f" * 48


def jetson(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", APP, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_provider_chain_and_options_as_data(tmp_path):
    settings = gpu.GpuSettings("tensorrt", device_id=1, gpu_mem_limit_mb=3072, fp16=True, cache_dir=tmp_path)
    chain = gpu.provider_chain(settings, SHA)
    assert [p if isinstance(p, str) else p[0] for p in chain] == [gpu.TENSORRT, gpu.CUDA, gpu.CPU]
    trt, cuda = dict(chain[0][1]), dict(chain[1][1])
    engines = tmp_path / "tensorrt" / ort.__version__ / SHA[:16]
    assert trt == {
        "device_id": "1",
        "trt_fp16_enable": "True",
        "trt_max_workspace_size": str(2048 << 20),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(engines),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(tmp_path / "tensorrt" / ort.__version__),
    }
    assert engines.is_dir()  # created before TensorRT writes into it
    assert cuda == {"device_id": "1", "arena_extend_strategy": "kSameAsRequested", "gpu_mem_limit": str(3072 << 20)}
    other = gpu.provider_chain(settings, "9" * 64)[0][1]["trt_engine_cache_path"]
    assert other != trt["trt_engine_cache_path"]  # one engine folder per program
    assert gpu.provider_chain(gpu.GpuSettings("cuda", cache_dir=tmp_path), SHA)[0] == (
        gpu.CUDA, {"device_id": "0", "arena_extend_strategy": "kSameAsRequested"})
    assert gpu.provider_chain(gpu.GpuSettings("cpu", cache_dir=tmp_path), SHA) == [gpu.CPU]
    no_fp16 = gpu.provider_chain(gpu.GpuSettings(fp16=False, cache_dir=tmp_path), SHA)[0][1]
    assert no_fp16["trt_fp16_enable"] == "False"
    with pytest.raises(UserError, match="device"):
        gpu.GpuSettings("npu")


def test_gpu_refusals_as_data():
    gpu.check_chosen({"vision": [gpu.CUDA, gpu.CPU]}, require_gpu=True)
    with pytest.raises(UserError, match="runs head on the CPU only"):
        gpu.check_chosen({"vision": [gpu.CUDA, gpu.CPU], "head": [gpu.CPU]}, require_gpu=True)
    gpu.check_chosen({"head": [gpu.CPU]}, require_gpu=False)


@pytest.mark.skipif(gpu.CUDA in ort.get_available_providers(), reason="this machine has a GPU build")
def test_require_gpu_refuses_a_cpu_only_onnxruntime(tiny_onnx, tmp_path):
    proc = jetson("warmup", tiny_onnx, "--require-gpu", "--cache", tmp_path)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "--require-gpu" in err and "CPUExecutionProvider" in err, err
    assert "Traceback" not in proc.stderr
    ok = jetson("info", "--cache", tmp_path)
    assert ok.returncode == 0 and "chain" in ok.stdout and "CPUExecutionProvider" in ok.stdout


def test_bench_on_the_cpu_provider_torch_free(tiny_onnx, tmp_path):
    out = tmp_path / "bench"
    proc = jetson("bench", tiny_onnx, "--device", "cpu", "--repeats", "3", "--out", out, "--cache", tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "jetson-bench.json").read_text())
    artifact = open_artifact(tiny_onnx)
    assert list(report["programs"]) == [label for label, *_ in artifact.programs()]
    for row in report["programs"].values():
        assert row["providers"] == [gpu.CPU]
        assert row["load_ms"] > 0 and row["first_run_ms"] > 0 and row["steady_run_ms"] > 0
    assert report["settings"]["device"] == "cpu" and report["settings"]["onnxruntime"] == ort.__version__
    assert "providers ONNX Runtime chose: CPUExecutionProvider" in proc.stdout


def test_vision_demo_on_the_cpu_provider(tiny_onnx, sample_png, tmp_path):
    from edgetrim.runtime.vision import VisionEncoder

    overlay = tmp_path / "kept.png"
    proc = jetson("vision", tiny_onnx, sample_png, "--device", "cpu", "--repeats", "2", "--overlay", overlay)
    assert proc.returncode == 0, proc.stderr
    want = VisionEncoder(tiny_onnx).encode(sample_png)
    assert f"K = {want.positions.shape[1]}," in proc.stdout
    assert f"per partition {want.partition_budgets[0].tolist()}" in proc.stdout
    assert overlay.exists() and "providers ONNX Runtime chose: CPUExecutionProvider" in proc.stdout
    bad = jetson("vision", tiny_onnx, sample_png, "--device", "cpu", "--overlay", tmp_path / "kept.jpg")
    assert bad.returncode == 2 and "--overlay" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_non_onnx_artifacts_are_refused(tiny_executorch: Path):
    proc = jetson("bench", tiny_executorch, "--device", "cpu")
    assert proc.returncode == 2 and "executorch" in proc.stderr and "--target onnx" in proc.stderr
