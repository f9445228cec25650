"""ONNX Runtime execution providers for a Jetson: TensorRT -> CUDA -> CPU, their options as data.

TensorRT builds one engine per graph the first time it sees it (minutes on an Orin); the engine and
timing caches live under ``<cache>/tensorrt/<onnxruntime version>/``, engines in one folder per
program sha256, so an engine is reused exactly when the graph and the runtime are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgetrim.runtime.backends import ProviderSpec
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.onnx_cache import cache_root

TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
DEVICES = {"tensorrt": (TENSORRT, CUDA, CPU), "cuda": (CUDA, CPU), "cpu": (CPU,)}
GPU_PROVIDERS = (TENSORRT, CUDA)
MB = 1 << 20


@dataclass(frozen=True)
class GpuSettings:
    """``device``: the first provider tried (the chain falls back in DEVICES order)."""

    device: str = "tensorrt"
    device_id: int = 0
    gpu_mem_limit_mb: int | None = None  # CUDA arena limit; None: ONNX Runtime's default (no limit)
    fp16: bool = True  # TensorRT may run layers in fp16
    workspace_mb: int = 2048  # TensorRT builder workspace
    cache_dir: Path | None = None  # default: <edgetrim cache>/jetson

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise UserError(f"`device` {self.device!r} is not one of {', '.join(DEVICES)}")

    @property
    def cache(self) -> Path:
        return self.cache_dir or cache_root() / "jetson"


def ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__


def tensorrt_folder(settings: GpuSettings) -> Path:
    return settings.cache / "tensorrt" / ort_version()


def engine_folder(settings: GpuSettings, program_sha256: str) -> Path:
    return tensorrt_folder(settings) / program_sha256[:16]


def tensorrt_options(settings: GpuSettings, program_sha256: str) -> dict[str, str]:
    return {
        "device_id": str(settings.device_id),
        "trt_fp16_enable": str(settings.fp16),
        "trt_max_workspace_size": str(settings.workspace_mb * MB),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(engine_folder(settings, program_sha256)),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(tensorrt_folder(settings)),
    }


def cuda_options(settings: GpuSettings) -> dict[str, str]:
    options = {"device_id": str(settings.device_id), "arena_extend_strategy": "kSameAsRequested"}
    if settings.gpu_mem_limit_mb is not None:
        options["gpu_mem_limit"] = str(settings.gpu_mem_limit_mb * MB)
    return options


def provider_chain(settings: GpuSettings, program_sha256: str) -> list[ProviderSpec]:
    """The providers for one program, in order of preference, with their options."""
    chain: list[ProviderSpec] = []
    for name in DEVICES[settings.device]:
        if name == TENSORRT:
            engine_folder(settings, program_sha256).mkdir(parents=True, exist_ok=True)
            chain.append((TENSORRT, tensorrt_options(settings, program_sha256)))
        elif name == CUDA:
            chain.append((CUDA, cuda_options(settings)))
        else:
            chain.append(CPU)
    return chain


def per_program(settings: GpuSettings):
    """What ``edgetrim.runtime`` loaders take as ``providers``: program sha256 -> provider chain."""
    return lambda program_sha256: provider_chain(settings, program_sha256)


def check_available(settings: GpuSettings, require_gpu: bool) -> list[str]:
    """The providers of the chain this ONNX Runtime build has; with ``require_gpu`` a chain without any
    GPU provider is refused before anything loads (ONNX Runtime would fall back to CPU silently)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    usable = [p for p in DEVICES[settings.device] if p in available]
    if require_gpu and not any(p in GPU_PROVIDERS for p in usable):
        raise UserError(
            f"a GPU was required but this ONNX Runtime ({ort_version()}) offers only {', '.join(available)}: "
            "install JetPack's onnxruntime-gpu wheel, or drop `require_gpu` to run on the CPU"
        )
    return usable


def check_chosen(chosen: dict[str, list[str]], require_gpu: bool) -> None:
    """``chosen``: program label -> the providers ONNX Runtime actually registered for it."""
    on_cpu = [label for label, providers in chosen.items() if not any(p in GPU_PROVIDERS for p in providers)]
    if require_gpu and on_cpu:
        raise UserError(
            f"a GPU was required but ONNX Runtime runs {', '.join(on_cpu)} on the CPU only (CUDA or TensorRT failed "
            "to start for it): check the JetPack / CUDA install, or drop `require_gpu`"
        )


def describe(settings: GpuSettings) -> dict[str, str]:
    return {
        "device": settings.device,
        "device_id": str(settings.device_id),
        "fp16": str(settings.fp16),
        "gpu_mem_limit_mb": "default" if settings.gpu_mem_limit_mb is None else str(settings.gpu_mem_limit_mb),
        "cache": str(settings.cache),
        "onnxruntime": ort_version(),
    }
