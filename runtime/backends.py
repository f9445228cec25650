"""Execution backends behind one interface: ``Backend.run(feeds) -> {name: array}``.

ONNX Runtime runs with numpy alone. ExecuTorch's Python runtime (executorch.runtime) imports
torch itself; this module imports it only when an ExecuTorch artifact is actually run. Core ML runs
on Apple systems only (through coremltools, macOS).
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from edgetrim.runtime import contract, onnx_cache
from edgetrim.runtime.errors import UserError


class Backend(Protocol):
    input_names: list[str]
    output_names: list[str]
    providers: list[str]  # what actually executes (ONNX Runtime's chosen providers, or the runtime's name)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


ProviderSpec = str | tuple[str, dict[str, str]]  # an ONNX Runtime provider name, or (name, provider options)
Providers = list[ProviderSpec] | Callable[[str], list[ProviderSpec]]  # or per program: its sha256 -> specs
CPU = "CPUExecutionProvider"


def provider_name(spec: ProviderSpec) -> str:
    return spec if isinstance(spec, str) else spec[0]


def session_options():
    """The ``onnxruntime.SessionOptions`` every session starts from: errors-only logs, and intra-op threads that
    stop spinning when a run ends (``session.force_spinning_stop``). A pipeline runs several sessions in turn
    (layer groups, then the head; the vision chunks): threads one session leaves spinning take the cores the
    next session's run needs. Qwen2-0.5B int4 decode on 2 cores, layers then head: 29.5 + 9.0 ms a token
    spinning on, 12.4 + 4.6 stopped."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


class OnnxBackend:
    def __init__(
        self,
        path: Path,
        output_names: list[str],
        providers: list[ProviderSpec] | None = None,
        program_sha256: str | None = None,
        preoptimized: bool = False,
        lean: bool = False,
    ) -> None:
        """``providers``: in order of preference, absent ones skipped (CPU when none is left).
        ``program_sha256``: the program's digest from the manifest; the graph optimized for these
        providers is cached under it (see ``onnx_cache``; ``cache`` tells ``hit`` / ``miss``).
        ``preoptimized``: an artifact written before 0.3 saved CPU-optimized graphs; opened as they are.
        ``lean``: for streamed chunks. Weights stay memory-mapped from the external data (no prepacked
        copy) and activations are freed after each run (no per-session arena): loading is cheap and a
        released session gives its memory back. Costs a few percent of compute."""
        import onnxruntime as ort

        options = session_options()
        if lean:
            options.add_session_config_entry("session.disable_prepacking", "1")
            options.enable_cpu_mem_arena = False
        available = ort.get_available_providers()
        chosen = [p for p in (providers or [CPU]) if provider_name(p) in available] or [CPU]
        names = [provider_name(p) for p in chosen]
        source, partial, self.cache = path, None, "off"
        if preoptimized:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        elif program_sha256 is None:
            options.graph_optimization_level = onnx_cache.ort_level(onnx_cache.optimization_level(names))
        elif onnx_cache.cached_graph(program_sha256, names).exists():
            source, self.cache = onnx_cache.cached_graph(program_sha256, names), "hit"
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        else:
            partial, self.cache = onnx_cache.optimize_into_cache(options, path, program_sha256, names), "miss"
        self.session = ort.InferenceSession(str(source), options, providers=chosen)
        if partial is not None:
            onnx_cache.publish(partial, program_sha256, names)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = output_names
        self.providers = self.session.get_providers()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outs, strict=True))


def quiet_torch_imports() -> None:
    """executorch pulls in torch and torchao, which log import-time noise; keep errors only."""
    import logging

    logging.getLogger("torchao").setLevel(logging.CRITICAL)
    import torch

    torch._logging.set_logs(all=logging.ERROR)


class ExecuTorchBackend:
    def __init__(self, path: Path, input_names: list[str], output_names: list[str], method: str = "forward") -> None:
        try:
            quiet_torch_imports()
            from executorch.runtime import Runtime
        except ImportError:
            raise UserError(
                "this artifact is an ExecuTorch program but executorch is not installed: pip install executorch==1.5.1"
            ) from None
        program = Runtime.get().load_program(str(path))
        if method not in program.method_names:
            raise UserError(f"{path.name} has no method {method!r} (it has {sorted(program.method_names)}): re-export")
        self.method = program.load_method(method)
        self.input_names = input_names
        self.output_names = output_names
        self.providers = ["ExecuTorch"]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch  # executorch's pybindings take and return torch tensors

        outs = self.method.execute([torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names])
        return {name: out.numpy() for name, out in zip(self.output_names, outs, strict=True)}


class CoreMLBackend:
    """A Core ML model (or one function of a multifunction package) through coremltools; macOS only."""

    def __init__(self, path: Path, input_names: list[str], output_names: list[str], method: str) -> None:
        if platform.system() != "Darwin":
            raise UserError("CoreML artifacts run through Core ML on Apple devices: use the iOS app, not edgetrim run")
        import coremltools as ct

        named = {} if method == contract.DEFAULT_METHOD else {"function_name": method}
        self.model = ct.models.MLModel(str(path), **named)
        self.input_names, self.output_names = input_names, output_names
        self.providers = ["CoreML"]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.model.predict({n: feeds[n] for n in self.input_names})
        return {n: np.asarray(outs[n]) for n in self.output_names}


def open_backend(
    target: str,
    path: Path,
    input_names: list[str],
    output_names: list[str],
    providers: list[ProviderSpec] | None = None,
    program_sha256: str | None = None,
    preoptimized: bool = False,
    lean: bool = False,
    method: str = "forward",
) -> Backend:
    """``providers``, ``program_sha256``, ``preoptimized``, ``lean``: ONNX only, see ``OnnxBackend``;
    ``method``: the ExecuTorch method or Core ML function to run (an ONNX file holds one graph)."""
    if target == contract.ONNX:
        return OnnxBackend(path, output_names, providers, program_sha256, preoptimized, lean)
    if target == contract.EXECUTORCH:
        return ExecuTorchBackend(path, input_names, output_names, method)
    if target == contract.COREML:
        return CoreMLBackend(path, input_names, output_names, method)
    raise UserError(f"unknown target {target!r} in the manifest: re-export the artifact")
