"""CoreML weight-only quantization (``edgetrim.export.targets.coreml.write(..., quantize=...)``): spec checks.

Tiny stages from the project's own builders (a decoder layer and the decode head of the tiny-qwen2
preset, a tiny CLIP block group, a two-function STDiT3 depth step), each written fp16 (the CoreML
default), int8 and int4: the chunk's quantization mark, the weights and the package shrinking, the
quantization ops / stored dtypes / deployment target in the spec, the same inputs and outputs at the
same static shapes, the same graph apart from its weights, no sort ops. Core ML cannot predict on
Linux: nothing numeric here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgetrim.export.families import decoder, stdit3
from edgetrim.export.families.vision import load_tower
from edgetrim.export.kinds.base import Chunk, single
from edgetrim.export.kinds.language_model import lm_chunks
from edgetrim.export.kinds.vision import encoder_chunks, reduction_plan
from edgetrim.export.options import ExportOptions
from edgetrim.export.stages.base import block_groups
from edgetrim.export.stages.decoder import LanguageModel
from edgetrim.export.stages.stdit3 import depth_example, depth_stages
from edgetrim.export.stages.vision import ReducedVisionEncoder
from edgetrim.export.targets import coreml
from edgetrim.runtime import contract

MODES = (None, "int8", "int4")
SORT_OPS = {"sort", "argsort", "topk"}  # the spec check forbids argsort and sort; topk sorts too
# bytes against the fp16 package: its stored weights (the weights folder; measured int8 0.53-0.56, int4
# 0.30-0.33), and the whole package, whose model.mlmodel and debug mapping weigh a lot at these sizes
# (measured int8 0.60-0.79, int4 0.38-0.63; the lm_head stage is almost all one linear weight)
WEIGHT_RATIO = {"int8": 0.6, "int4": 0.35}
PACKAGE_RATIO = {"int8": 0.85, "int4": 0.7}
LINEAR_PACKAGE_RATIO = {"int8": 0.65, "int4": 0.42}  # lm_head
QUANT_OP = {"int8": "constexpr_affine_dequantize", "int4": "constexpr_blockwise_shift_scale"}


def lm_stages() -> dict[str, Chunk]:
    """tiny-qwen2 at a short cache, one layer per chunk, the decode function alone: layers_01-01 (a decoder
    layer) and lm_head."""
    lm = LanguageModel(decoder.build_preset("tiny-qwen2"), 32, 8).eval()
    chunks = {c.name: single(c.name, c.functions["decode"], c.examples()["decode"]) for c in lm_chunks(lm, 2)[0]}
    return {"decoder_layer": chunks["layers_01-01"], "lm_head": chunks["lm_head"]}


def vision_blocks() -> Chunk:
    """The first block group of tiny-clip chunked embed / 2 block groups / head."""
    tower = load_tower("tiny-clip")
    groups = block_groups(len(tower.layers), 2)
    plan = reduction_plan(tower, ExportOptions(target=contract.COREML), contract.VISION_ENCODER)
    module = ReducedVisionEncoder(tower, plan, groups).eval()
    return next(c for c in encoder_chunks(module, groups, None) if c.name.startswith("blocks_"))


def video_depth() -> Chunk:
    """depth_00 of stdit3-tiny: functions plain and tdtm over the same block modules."""
    model = stdit3.build_preset("stdit3-tiny")
    shape = stdit3.VideoShape(1, 2, 4, 4)
    functions = depth_stages(model, 0, shape.tokens(model.config.patch_size)[0])
    return Chunk("depth_00", dict(functions), depth_example(model, shape))


BUILDERS = {
    "decoder_layer": lm_stages,
    "lm_head": lm_stages,
    "vision_blocks": vision_blocks,
    "video_depth": video_depth,
}
STAGES = tuple(BUILDERS)
# the multifunction chunk: int8 only (iOS 17 functions merged into an iOS 18 package; int4 functions are
# iOS 18 already), to keep the file fast
STAGE_MODES = {"video_depth": (None, "int8")}


def quantized(out: dict) -> list[str]:
    return [mode for mode in out if mode is not None]


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def weight_bytes(package: Path) -> int:
    return sum(tree_bytes(p) for p in package.rglob("weights") if p.is_dir())


def quantizable(chunk: Chunk, mode: str) -> int:
    """Distinct linear / conv weights a forward of each function uses that the mode quantizes, summed over
    the functions (int4: input width a multiple of the block; others stay float)."""
    count = 0
    for stage in chunk.functions.values():
        used: dict[int, torch.Tensor] = {}

        def seen(module, args, out, used=used) -> None:
            used[id(module.weight)] = module.weight

        hooks = [
            m.register_forward_hook(seen)
            for m in stage.modules()
            if isinstance(m, torch.nn.Linear | torch.nn.Conv2d | torch.nn.Conv3d)
        ]
        with torch.no_grad():
            stage(*chunk.example)
        for hook in hooks:
            hook.remove()
        for w in used.values():
            blocks = mode != "int4" or w.shape[1] % coreml.INT4_BLOCK == 0
            count += w.numel() >= coreml.WEIGHT_MIN_ELEMENTS and blocks
    return count


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """stage -> mode -> (chunk, ChunkFiles, spec_summary, package bytes, weight bytes); written on first use."""
    root = tmp_path_factory.mktemp("coreml-quantize")
    chunks: dict[str, Chunk] = {}
    cache: dict[str, dict] = {}

    def get(stage: str) -> dict:
        if stage not in cache:
            if stage not in chunks:
                built = BUILDERS[stage]()
                chunks.update(built if isinstance(built, dict) else {stage: built})
            chunk = chunks[stage]
            cache[stage] = {}
            for mode in STAGE_MODES.get(stage, MODES):
                folder = root / stage / str(mode)
                folder.mkdir(parents=True)
                files = coreml.write(chunk.functions, chunk.example, folder, chunk.name, True, mode)
                package = files.files[0][0]
                summary = coreml.spec_summary(package)
                cache[stage][mode] = (chunk, files, summary, tree_bytes(package), weight_bytes(package))
        return cache[stage]

    return get


@pytest.mark.parametrize("stage", STAGES)
def test_quantized_chunk_is_marked_and_smaller(stage, written):
    out = written(stage)
    _, fp, _, fp_package, fp_weights = out[None]
    assert fp.extra == {}
    for mode in quantized(out):
        _, files, _, package, weights = out[mode]
        assert files.extra == {"quantization": coreml.QUANTIZE[mode]}
        assert files.functions == fp.functions and [r for _, r in files.files] == [r for _, r in fp.files]
        assert weights < WEIGHT_RATIO[mode] * fp_weights, (stage, mode, weights / fp_weights)
        bound = (LINEAR_PACKAGE_RATIO if stage == "lm_head" else PACKAGE_RATIO)[mode]
        assert package < bound * fp_package, (stage, mode, package / fp_package)
    if "int4" in out:
        assert out["int4"][3] < out["int8"][3] and out["int4"][4] < out["int8"][4]


@pytest.mark.parametrize("stage", STAGES)
def test_spec_holds_quantized_weights_and_target(stage, written):
    out = written(stage)
    multi = len(out[None][0].functions) > 1
    fp = out[None][2]
    assert fp["quantization_ops"] == {} and fp["quantized_dtypes"] == {}
    assert fp["deployment_target"] == ("iOS18" if multi else "iOS17")
    for mode in quantized(out):
        chunk, _, spec, _, _ = out[mode]
        expected = quantizable(chunk, mode)
        assert expected > 0
        assert spec["quantization_ops"] == {QUANT_OP[mode]: expected}, (mode, spec["ops"])
        assert spec["quantized_dtypes"] == {mode: expected}
    assert (out["int8"][2]["spec_version"], out["int8"][2]["deployment_target"]) == (
        (9, "iOS18") if multi else (8, "iOS17")
    )
    assert out["int8"][2]["opsets"] == (["CoreML8"] if multi else ["CoreML7"])
    if "int4" in out:
        assert (out["int4"][2]["spec_version"], out["int4"][2]["deployment_target"]) == (9, "iOS18")
        assert out["int4"][2]["opsets"] == ["CoreML8"]


@pytest.mark.parametrize("stage", STAGES)
def test_interface_and_graph_unchanged(stage, written):
    """Same functions, input / output names, static shapes and dtypes; same ops apart from the weights."""
    out = written(stage)
    fp = out[None][2]

    def compute(spec: dict) -> dict:
        return {k: v for k, v in spec["ops"].items() if k != "const" and k not in coreml.QUANTIZED_OPS}

    for mode in out:
        spec = out[mode][2]
        assert not SORT_OPS & set(spec["ops"]), spec["ops"]
        assert spec["functions"] == fp["functions"]
        for function in spec["functions"].values():
            assert all(all(d > 0 for d in f["shape"]) for f in function["inputs"] + function["outputs"])
        assert compute(spec) == compute(fp), mode
        if mode:  # every quantized weight replaced one float const
            assert spec["ops"]["const"] == fp["ops"]["const"] - sum(spec["quantization_ops"].values())
    chunk = out[None][0]
    stage_module = next(iter(chunk.functions.values()))
    for function in fp["functions"].values():
        assert [(i["name"], i["shape"]) for i in function["inputs"]] == [
            (n, list(x.shape)) for n, x in zip(stage_module.input_names, chunk.example, strict=True)
        ]
        assert [o["name"] for o in function["outputs"]] == stage_module.output_names


def test_quantize_names():
    assert coreml.QUANTIZE == {"int8": contract.INT8_WEIGHT, "int4": contract.INT4_WEIGHT}
    assert coreml.quantize_mode(None) is None
    assert coreml.quantize_mode("int4") == coreml.quantize_mode(contract.INT4_WEIGHT) == "int4"
    with pytest.raises(ValueError, match="int8"):
        coreml.write({}, (), Path("."), "x", True, contract.INT8_DYNAMIC)


class NormThenLinear(torch.nn.Module):
    """LayerNorm then Linear (width 256), every bias zero, as in a freshly initialized checkpoint (the presets)."""

    input_names, output_names = ["x"], ["y"]

    def __init__(self) -> None:
        super().__init__()
        self.norm, self.linear = torch.nn.LayerNorm(256), torch.nn.Linear(256, 256)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_equal_constants_read_by_quantized_and_float_ops(mode, tmp_path):
    """The linear's zero bias equals the norm's zero beta: merged into one constant, the quantizer would refuse it
    ("compression config conflict": llava-next-small's tower at real size). Quantized conversions keep them apart."""
    stage = NormThenLinear().eval()
    files = coreml.write({"forward": stage}, (torch.randn(1, 4, 256),), tmp_path, "blocks", True, mode)
    spec = coreml.spec_summary(files.files[0][0])
    assert spec["quantization_ops"] == {QUANT_OP[mode]: 1}, spec["ops"]
