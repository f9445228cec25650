"""STDiT3 depth-step chunks with two functions sharing one copy of the weights: plain and TDTM.

A depth step (spatial + temporal block) is exported twice from the same parameters, once per
static ``merge`` flag, and packed so the weights are stored once:

- ONNX: two graphs (``<stem>.plain.onnx``, ``<stem>.tdtm.onnx``) whose large initializers point into
  one external-data file ``<stem>.onnx.data``; identical tensors (by dtype, shape and bytes) are
  written once, whatever name each exporter run gave them.
- ExecuTorch: one ``.pte`` with methods ``forward_plain`` and ``forward_tdtm`` (XNNPACK-lowered).
- CoreML: one multifunction ``.mlpackage`` with functions ``forward_plain`` / ``forward_tdtm``.

Chunk I/O (static shapes): ``hidden_XX`` [B, T*S, C], ``t_mlp`` [B, 6C], ``caption`` [B, L, C],
``caption_mask`` [B, L] (1 keep, 0 pad) -> ``hidden_{XX+1}`` [B, T*S, C].
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgetrim.export.models.stdit3 import DepthStage, STDiT3, VideoShape
from edgetrim.export.targets.executorch import MISSING_KERNELS
from edgetrim.export.targets.onnx import OPSET
from edgetrim.runtime.errors import UserError

VARIANTS = ("plain", "tdtm")
METHODS = {"plain": "forward_plain", "tdtm": "forward_tdtm"}
INLINE_BYTES = 64  # initializers below this stay inside each graph (duplicated, negligible)
ALIGN = 64
FLOAT_TYPES = (1, 10, 11, 16)  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


@dataclass
class VariantExport:
    """Files written for one two-function chunk and where each function lives."""

    files: list[tuple[Path, str]]  # (path, manifest role)
    functions: dict[str, dict] = field(default_factory=dict)  # variant -> {"file" (in the folder), "method"}

    @property
    def bytes(self) -> int:
        return sum(path_bytes(p) for p, _ in self.files)


def path_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def depth_stages(model: STDiT3, step: int, frames: int) -> dict[str, DepthStage]:
    """Both variants of depth step ``step``; they share the block modules (same parameters)."""
    return {v: DepthStage(model, step, frames, merge=v == "tdtm").eval() for v in VARIANTS}


def depth_example(model: STDiT3, shape: VideoShape, caption_length: int | None = None, seed: int = 0):
    """Realistic example inputs of a depth chunk: the embed stage run on a seeded random latent and caption.

    Returns (hidden [B, T*S, C], t_mlp [B, 6C], caption [B, L, C], caption_mask [B, L]); the mask keeps
    the first 3/4 of the caption (the rest is padding).
    """
    c = model.config
    gen = torch.Generator().manual_seed(seed)
    length = caption_length or c.model_max_length
    latent = torch.randn(shape.batch, c.in_channels, shape.frames, shape.height, shape.width, generator=gen)
    timestep = torch.full((shape.batch,), 700.0)
    with torch.no_grad():
        _, t_mlp = model.embed_time(timestep, shape.fps)
        hidden = model.embed_video(latent, model.pos_embed(shape))
        caption = model.y_embedder(torch.randn(shape.batch, length, c.caption_channels, generator=gen))
    mask = torch.zeros(shape.batch, length)
    mask[:, : max(1, 3 * length // 4)] = 1.0
    return hidden.contiguous(), t_mlp.contiguous(), caption.contiguous(), mask


def depth_step_flops(model: STDiT3, shape: VideoShape, merge: bool, caption_length: int | None = None) -> int:
    """Multiply-adds x 2 of one depth step (spatial + temporal block) at ``shape``; TDTM halves the frames
    seen by self-attention and cross-attention (queries), not the MLP nor the caption's keys/values."""
    c = model.config
    dim, length = c.hidden_size, caption_length or c.model_max_length
    frames, h, w = shape.tokens(c.patch_size)
    s = h * w
    seen = frames // 2 if merge else frames
    n, m = frames * s, seen * s
    linear = 2 * m * dim * dim * 4 + 2 * m * dim * dim * 2 + 2 * length * dim * 2 * dim + 2 * n * dim * 8 * dim
    cross = 4 * m * length * dim
    spatial = linear + cross + 4 * seen * s * s * dim
    temporal = linear + cross + 4 * s * seen * seen * dim
    return shape.batch * (spatial + temporal)


# ---------------------------------------------------------------------------------------------- ONNX


def _export_onnx_graph(stage: DepthStage, example: tuple, path: Path):
    """torch.onnx dynamo export -> onnx.ModelProto with weights loaded in memory."""
    import onnx

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            stage,
            example,
            dynamo=True,
            opset_version=OPSET,
            input_names=stage.input_names,
            output_names=stage.output_names,
            optimize=True,
            verbose=False,
        )
    program.save(str(path), external_data=True)
    model = onnx.load(str(path), load_external_data=True)
    for node in model.graph.node:  # the exporter's per-node stack traces: most of a small graph's bytes
        del node.metadata_props[:]
    del model.graph.value_info[:]  # intermediate shapes: ONNX Runtime infers them again
    return model


def ort_optimized(model, folder: Path, name: str):
    """ONNX Runtime's extended (portable) graph optimizations applied once, as the pipeline does for its
    chunks, so sessions can open with optimizations disabled. Returns the optimized ModelProto."""
    import onnx
    import onnxruntime as ort

    source, target = folder / f"src-{name}.onnx", folder / f"opt-{name}.onnx"
    onnx.save(model, str(source), save_as_external_data=True, location=source.name + ".data")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", target.name + ".data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(target), load_external_data=True)


def share_external_data(models: dict[str, object], folder: Path, stem: str) -> tuple[dict[str, Path], Path]:
    """Write each ModelProto as ``<stem>.<variant>.onnx`` with its large initializers in one shared
    ``<stem>.onnx.data``; a tensor present in several graphs (same dtype, shape, bytes) is stored once."""
    import onnx
    from onnx import numpy_helper

    data_path = folder / f"{stem}.onnx.data"
    offsets: dict[tuple, tuple[int, int]] = {}
    paths: dict[str, Path] = {}
    with data_path.open("wb") as data:
        for variant, model in models.items():
            for tensor in model.graph.initializer:
                if tensor.data_type not in FLOAT_TYPES:  # shapes and indices: shape inference needs them inline
                    continue
                raw = numpy_helper.to_array(tensor).tobytes()
                if len(raw) < INLINE_BYTES:
                    continue
                key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(raw).hexdigest())
                if key not in offsets:
                    data.write(b"\0" * (-data.tell() % ALIGN))
                    offsets[key] = (data.tell(), len(raw))
                    data.write(raw)
                offset, length = offsets[key]
                tensor.ClearField("raw_data")
                for name in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
                    tensor.ClearField(name)
                del tensor.external_data[:]
                for k, v in (("location", data_path.name), ("offset", str(offset)), ("length", str(length))):
                    tensor.external_data.add(key=k, value=v)
                tensor.data_location = onnx.TensorProto.EXTERNAL
            paths[variant] = folder / f"{stem}.{variant}.onnx"
            onnx.save(model, str(paths[variant]))
    return paths, data_path


def single_variant_bytes(graph: Path) -> int:
    """Bytes one graph would take on its own: its .onnx plus the distinct external tensors it references."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    spans = set()
    for tensor in model.graph.initializer:
        entry = {e.key: e.value for e in tensor.external_data}
        if entry:
            spans.add((entry["location"], int(entry["offset"]), int(entry["length"])))
    return graph.stat().st_size + sum(length for _, _, length in spans)


def export_depth_onnx(
    model: STDiT3, step: int, frames: int, example: tuple, folder: Path, stem: str, optimize: bool = True
) -> VariantExport:
    """Two ONNX graphs (plain, TDTM) over one shared external-data file; ``optimize``: saved after ONNX
    Runtime's extended optimizations (open them with optimizations disabled)."""
    stages = depth_stages(model, step, frames)
    with tempfile.TemporaryDirectory() as tmp:
        protos = {v: _export_onnx_graph(s, example, Path(tmp) / f"{v}.onnx") for v, s in stages.items()}
        if optimize:
            protos = {v: ort_optimized(p, Path(tmp), v) for v, p in protos.items()}
        paths, data_path = share_external_data(protos, folder, stem)
    return VariantExport(
        files=[(paths["plain"], "program"), (paths["tdtm"], "program_tdtm"), (data_path, "external_data")],
        functions={v: {"file": paths[v].name} for v in VARIANTS},
    )


# ---------------------------------------------------------------------------------------------- ExecuTorch


def check_methods_portable(edge) -> None:
    """Refuse ops the pip runtime has no kernel for, in every method."""
    for method in edge.methods:
        for node in edge.exported_program(method).graph.nodes:
            target = str(node.target)
            if node.op == "call_function" and any(f"aten.{op}." in target for op in MISSING_KERNELS):
                raise UserError(f"method {method} uses {target}, which ExecuTorch's runtime lacks: an edgetrim bug")


def export_depth_executorch(model: STDiT3, step: int, frames: int, example: tuple, path: Path) -> VariantExport:
    """One .pte with methods forward_plain / forward_tdtm (both XNNPACK-lowered)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    stages = depth_stages(model, step, frames)
    with torch.no_grad():
        programs = {METHODS[v]: torch.export.export(s, example) for v, s in stages.items()}
    edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
    check_methods_portable(edge)
    path.write_bytes(edge.to_executorch().buffer)
    return VariantExport(
        files=[(path, "program")], functions={v: {"file": path.name, "method": METHODS[v]} for v in VARIANTS}
    )


# ---------------------------------------------------------------------------------------------- CoreML


def export_depth_coreml(
    model: STDiT3, step: int, frames: int, example: tuple, path: Path, fp16: bool = True
) -> VariantExport:
    """One multifunction .mlpackage (functions forward_plain / forward_tdtm, weights deduplicated)."""
    import coremltools as ct

    from edgetrim.export.targets.coreml import export_coreml

    stages = depth_stages(model, step, frames)
    tmp = Path(tempfile.mkdtemp(prefix=".coreml-", dir=path.parent))
    try:
        desc = ct.utils.MultiFunctionDescriptor()
        for variant, stage in stages.items():
            single = tmp / f"{variant}.mlpackage"
            export_coreml(stage, example, single, stage.input_names, stage.output_names, fp16)
            desc.add_function(str(single), src_function_name="main", target_function_name=METHODS[variant])
        desc.default_function_name = METHODS["plain"]
        ct.utils.save_multifunction(desc, str(path))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return VariantExport(
        files=[(path, "program")], functions={v: {"file": path.name, "method": METHODS[v]} for v in VARIANTS}
    )


def coreml_functions(path: Path) -> dict[str, dict]:
    """Function name -> {"inputs": {name: shape}, "outputs": [names]} from a saved .mlpackage's spec."""
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    return {
        f.name: {
            "inputs": {i.name: [int(s) for s in i.type.multiArrayType.shape] for i in f.input},
            "outputs": [o.name for o in f.output],
        }
        for f in spec.description.functions
    }
