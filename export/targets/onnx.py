"""ONNX target: each function of a chunk is one graph; all graphs of a chunk share one external-data file.

Per function: torch.onnx dynamo export (opset 18; the exporter's own optimizer folds constants and
keeps standard ops) -> optionally quantized with ONNX Runtime's own quantizers: ``int8`` = dynamic
int8 weight MatMuls (standard-domain integer ops), ``int4`` = MatMulNBits (com.microsoft: int4
weights in blocks of 32, int8 compute where the CPU has it). The graph stays
portable: ONNX Runtime's provider-specific fusions are applied where it runs, at load, and cached
per machine (``edgetrim.runtime.onnx_cache``). Then every graph is written with its weights
(>= 64 bytes) in ``<stem>.onnx.data``, 64-byte aligned, a tensor present in several graphs (same
dtype, shape, bytes) stored once whatever name each exporter run gave it.
Files: ``<stem>.onnx`` (one function) or ``<stem>.<function>.onnx`` (several), and ``<stem>.onnx.data``.

A quantized LM head tied to the token embedding (``tied``, ``TiedWeight``) becomes one MatMulNBits of
bits 8 (a scale per ``tied.block`` values along the input, zero point 128, int8 compute) whose weight and
scales are the int8_block embedding table itself: the graphs reference the two top-level .npy files
(offset past their header) instead of a copy in ``<stem>.onnx.data``, so the artifact holds that [V, D]
matrix once.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from edgetrim.export.targets.base import ChunkFiles, Examples, Functions, TiedWeight, per_function
from edgetrim.export.targets.onnx_fused import TRANSLATIONS
from edgetrim.runtime import contract

OPSET = 18
INLINE_BYTES = 64  # initializers below this stay inside each graph (duplicated, negligible)
ALIGN = 64
WEIGHT_TYPES = (1, 2, 3, 10, 11, 16)  # onnx.TensorProto FLOAT, UINT8, INT8, FLOAT16, DOUBLE, BFLOAT16
QUANTIZE = {"int8": contract.INT8_DYNAMIC, "int4": contract.INT4_DYNAMIC}  # request -> the manifest's mark
BLOCK = 32  # int4: weights quantized in blocks of 32 along the input dimension


def export_graph(stage: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> Path:
    """torch.onnx dynamo export at the static shapes of ``example``, weights external, stack traces dropped."""
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
            custom_translation_table=TRANSLATIONS,
        )
    program.save(str(path), external_data=True)
    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:  # the exporter's per-node stack traces: most of a small graph's bytes
        del node.metadata_props[:]
    onnx.save(model, str(path))
    return path


def quantize_int8_dynamic(src: Path, dst: Path) -> Path:
    """Weight MatMuls -> ONNX Runtime's dynamic int8 ones (int8 weights per output channel, activations
    quantized per run); attention's activation products stay float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_root_logger(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            src,
            dst,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            reduce_range=True,  # 7-bit weights: no u8s8 saturation on CPUs without VNNI (AVX2)
            extra_options={"MatMulConstBOnly": True},
            use_external_data_format=True,
        )
    return dst


@contextmanager
def quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizers configure the root logger at import (INFO, a stderr handler) and log every
    node: keep both to the quantization and restore the caller's logging after."""
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def quantize_int4_blocks(src: Path, dst: Path) -> Path:
    """Weight MatMuls -> MatMulNBits: symmetric int4 weights in blocks of ``BLOCK`` along the input, int8
    compute (``accuracy_level`` 4: activations quantized per run where the CPU has int8 dot products).
    A MatMul whose input width is not a multiple of the block stays float."""
    import onnx

    with quiet_root_logger():
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    model = onnx.load(str(src))
    with quiet_root_logger(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantizer = MatMulNBitsQuantizer(
            model, bits=4, block_size=BLOCK, is_symmetric=True, accuracy_level=4, op_types_to_quantize=("MatMul",)
        )
        quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=True)
    return dst


def tie_head(src: Path, dst: Path, tied: TiedWeight) -> Path:
    """The graph's one float weight product over a [N, K] / [K, N] initializer equal in shape to the tied
    weight (the LM head: Gemm with transB or MatMul) -> MatMulNBits bits 8 over ``tied``'s values and scales
    (accuracy_level 4: int8 compute where the CPU has it)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    n, k = tied.values.shape
    inits = {t.name: t for t in graph.initializer}

    def is_head(node) -> bool:
        if len(node.input) < 2 or node.input[1] not in inits:
            return False
        dims = tuple(inits[node.input[1]].dims)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm":
            plain = attrs.get("transA", 0) == 0 and attrs.get("alpha", 1.0) == 1.0 and len(node.input) == 2
            return plain and attrs.get("transB", 0) == 1 and dims == (n, k)
        return node.op_type == "MatMul" and dims == (k, n)

    heads = [i for i, node in enumerate(graph.node) if is_head(node)]
    if len(heads) != 1:
        raise RuntimeError(f"{src.name}: {len(heads)} products over a [{n}, {k}] weight, not the one tied LM head")
    node = graph.node[heads[0]]
    weight = node.input[1]
    name = "lm_head.weight"
    values = tied.values.reshape(n, k // tied.block, tied.block)
    replacement = helper.make_node(
        "MatMulNBits",
        [node.input[0], f"{name}_Q8", f"{name}_scales"],
        list(node.output),
        name=node.name or "lm_head",
        domain="com.microsoft",
        K=k,
        N=n,
        bits=8,
        block_size=tied.block,
        accuracy_level=4,
    )
    graph.node.remove(node)
    graph.node.insert(heads[0], replacement)
    if not any(weight in other.input for other in graph.node):
        graph.initializer.remove(inits[weight])
    graph.initializer.extend(
        [
            numpy_helper.from_array(values, f"{name}_Q8"),
            numpy_helper.from_array(np.ascontiguousarray(tied.scales).reshape(-1), f"{name}_scales"),
        ]
    )
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst), save_as_external_data=True, location=dst.name + ".data", size_threshold=INLINE_BYTES)
    return dst


def npy_links(tied: TiedWeight) -> dict[str, tuple[str, int]]:
    """sha256 of the tied values' / scales' bytes -> (their .npy file, offset of the data past its header)."""
    import numpy as np

    links = {}
    for array, name in zip((tied.values, tied.scales), tied.files, strict=True):
        buffer = io.BytesIO()
        np.save(buffer, array)
        raw = np.ascontiguousarray(array).tobytes()
        links[hashlib.sha256(raw).hexdigest()] = (name, buffer.tell() - len(raw))
    return links


def tensor_bytes(tensor, folder: Path) -> bytes:
    """The raw bytes of an initializer, read from its external file when it has one."""
    from onnx import numpy_helper

    entry = {e.key: e.value for e in tensor.external_data}
    if not entry:
        return numpy_helper.to_array(tensor).tobytes()
    with (folder / entry["location"]).open("rb") as fh:
        fh.seek(int(entry.get("offset", 0)))
        return fh.read(int(entry["length"])) if "length" in entry else fh.read()


def write_shared(
    graphs: dict[str, Path], folder: Path, stem: str, links: dict[str, tuple[str, int]] | None = None
) -> tuple[dict[str, Path], Path]:
    """Write each graph as ``folder/<stem>[.<function>].onnx`` with its weights in one ``<stem>.onnx.data``;
    a weight whose bytes' sha256 is in ``links`` references that (file, offset) instead (a tied LM head)."""
    links = links or {}
    import onnx

    data_path = folder / f"{stem}.onnx.data"
    offsets: dict[tuple, tuple[int, int]] = {}
    paths: dict[str, Path] = {}
    with data_path.open("wb") as data:
        for function, source in graphs.items():
            model = onnx.load(str(source), load_external_data=False)
            del model.graph.value_info[:]  # intermediate shapes: ONNX Runtime infers them again
            for tensor in model.graph.initializer:
                raw = tensor_bytes(tensor, source.parent)
                if tensor.data_type not in WEIGHT_TYPES or len(raw) < INLINE_BYTES:
                    if tensor.external_data:  # shapes and indices: shape inference needs them inline
                        del tensor.external_data[:]
                        tensor.data_location = onnx.TensorProto.DEFAULT
                        tensor.raw_data = raw
                    continue
                digest = hashlib.sha256(raw).hexdigest()
                key = (tensor.data_type, tuple(tensor.dims), digest)
                if digest not in links and key not in offsets:
                    data.write(b"\0" * (-data.tell() % ALIGN))
                    offsets[key] = (data.tell(), len(raw))
                    data.write(raw)
                location, (offset, length) = data_path.name, offsets.get(key, (0, len(raw)))
                if digest in links:
                    location, offset = links[digest]
                for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                    tensor.ClearField(name)
                del tensor.external_data[:]
                for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
                    tensor.external_data.add(key=k, value=v)
                tensor.data_location = onnx.TensorProto.EXTERNAL
            paths[function] = folder / (f"{stem}.onnx" if len(graphs) == 1 else f"{stem}.{function}.onnx")
            onnx.save(model, str(paths[function]))
    return paths, data_path


def write(
    functions: Functions,
    example: Examples,
    folder: Path,
    stem: str,
    fp16: bool = False,
    quantize: str | None = None,
    tied: TiedWeight | None = None,
) -> ChunkFiles:
    """One chunk: every function as a graph (at its own example's shapes), weights shared. ``quantize``:
    None, ``int8`` or ``int4`` (deterministic, so a weight quantized in two graphs is still stored once);
    ``tied``: the chunk is a quantized LM head whose weight is the int8_block embedding (``tie_head``)."""
    del fp16  # ONNX artifacts are fp32
    quantizer = {"int8": quantize_int8_dynamic, "int4": quantize_int4_blocks}.get(quantize or "")
    if tied is not None:
        quantizer = lambda src, dst: tie_head(src, dst, tied)  # noqa: E731
    examples = per_function(functions, example)
    graphs = {}
    with tempfile.TemporaryDirectory(prefix=".onnx-", dir=folder) as tmp:
        for function, stage in functions.items():
            path = export_graph(stage, examples[function], Path(tmp) / f"{function}.onnx")
            if quantizer:
                path = quantizer(path, Path(tmp) / f"{function}.{quantize}.onnx")
            graphs[function] = path
        paths, data_path = write_shared(graphs, folder, stem, npy_links(tied) if tied is not None else None)
    names = list(paths)
    files = [(paths[f], contract.program_role(f, i == 0)) for i, f in enumerate(names)]
    extra = {"quantization": QUANTIZE[quantize]} if quantize else {}
    return ChunkFiles(files + [(data_path, contract.EXTERNAL_DATA)], {f: {"file": paths[f].name} for f in names}, extra)


def function_bytes(graph: Path) -> int:
    """Bytes one graph would take on its own: its .onnx plus the distinct external tensors it references."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    spans = set()
    for tensor in model.graph.initializer:
        entry = {e.key: e.value for e in tensor.external_data}
        if entry:
            spans.add((entry["location"], int(entry["offset"]), int(entry["length"])))
    return graph.stat().st_size + sum(length for _, _, length in spans)
