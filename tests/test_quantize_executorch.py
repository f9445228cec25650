"""ExecuTorch int8 / int4 chunks (torchao 8da8w / 8da4w + XNNPACK) on tiny stages of the project's presets:
each .pte loads and runs in ExecuTorch's Python runtime, is smaller than its fp32 twin, stays close to the
PyTorch stage, keeps every linear inside the XNNPACK delegate, and leaves the reference stage float.

Measured here (torch 2.13, executorch 1.5.1, torchao 0.18; .pte bytes vs the fp32 .pte, min output cosine
to the PyTorch stage): tiny-qwen2 decode layer 1 int4 0.286x / 0.9944; decode head int8 0.291x / 0.99996,
int4 0.170x / 0.9958; tiny-clip block 1 int8 0.360x / 0.999994.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from edgetrim.export.families import decoder
from edgetrim.export.families.vision import build_preset as vision_preset
from edgetrim.export.kinds.base import single
from edgetrim.export.kinds.language_model import lm_chunks
from edgetrim.export.reducers.budget import resolve_budget
from edgetrim.export.stages.base import Stage, stage_examples
from edgetrim.export.stages.decoder import HeadStage, LanguageModel, rms_norm
from edgetrim.export.stages.vision import BlockStage, EmbedStage, ReductionPlan
from edgetrim.export.targets import executorch as et
from edgetrim.runtime import contract
from edgetrim.runtime.errors import EdgetrimBug

pytest.importorskip("executorch")
pytest.importorskip("torchao")
logging.getLogger("torchao").setLevel(logging.CRITICAL)

NOT_DELEGATED = ("linear", "mm", "quantize", "choose_qparams")  # op names that must not run on portable kernels


def outputs(stage: nn.Module, example: tuple) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = stage(*example)
    return out if isinstance(out, tuple) else (out,)


def run_pte(path, method: str, example: tuple) -> list[torch.Tensor]:
    from executorch.runtime import Runtime

    return list(Runtime.get().load_program(str(path)).load_method(method).execute(list(example)))


def min_cosine(got, want) -> float:
    assert len(got) == len(want)
    cos = nn.functional.cosine_similarity
    return min(cos(a.flatten().double(), b.flatten().double(), dim=0).item() for a, b in zip(got, want, strict=True))


def assert_delegated(path) -> None:
    """Every method of the .pte: XNNPACK holds the linears and (de)quantize ops; none left to portable kernels."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    for plan in deserialize_pte_binary(path.read_bytes()).program.execution_plan:
        ops = [op.name for op in plan.operators]
        assert not [op for op in ops if any(word in op for word in NOT_DELEGATED)], (plan.name, ops)
        assert "XnnpackBackend" in [d.id for d in plan.delegates], plan.name


def snapshot(stage: nn.Module) -> dict[str, tuple[type, torch.Tensor]]:
    return {name: (type(p), p.detach().clone()) for name, p in stage.named_parameters()}


def assert_untouched(stage: nn.Module, before: dict, example: tuple, reference: tuple) -> None:
    after = snapshot(stage)
    assert after.keys() == before.keys()
    for name, (kind, value) in before.items():
        assert after[name][0] is kind is nn.Parameter, name
        assert torch.equal(after[name][1], value), name
    assert all(torch.equal(a, b) for a, b in zip(outputs(stage, example), reference, strict=True))


def write_and_check(stage, example, folder, quantize, fp32_path, max_ratio, min_cos):
    """Quantized write of one stage + every check; returns (size ratio, min cosine)."""
    reference, before = outputs(stage, example), snapshot(stage)
    files = et.write({"forward": stage}, example, folder, f"q-{quantize}", quantize=quantize)
    path = files.files[0][0]
    assert files.extra == {"quantization": et.QUANTIZE[quantize]}
    assert files.functions == {"forward": {"file": path.name, "method": contract.DEFAULT_METHOD}}
    assert_untouched(stage, before, example, reference)
    assert_delegated(path)
    ratio = path.stat().st_size / fp32_path.stat().st_size
    cosine = min_cosine(run_pte(path, contract.DEFAULT_METHOD, example), reference)
    assert ratio < max_ratio, f"{quantize}: {ratio:.3f}x the fp32 program"
    assert cosine >= min_cos, f"{quantize}: cosine {cosine:.5f}"
    return ratio, cosine


def write_fp32(stage, example, folder):
    files = et.write({"forward": stage}, example, folder, "fp32")
    assert files.extra == {}
    path = files.files[0][0]
    assert min_cosine(run_pte(path, contract.DEFAULT_METHOD, example), outputs(stage, example)) > 0.99999
    return path


@pytest.fixture(scope="module")
def lm() -> LanguageModel:
    return LanguageModel(decoder.build_preset("tiny-qwen2"), 32, 16).eval()


@pytest.fixture(scope="module")
def decode_chunks(lm):
    chunks, _ = lm_chunks(lm, 2)  # one layer per chunk, the decode function alone
    return {c.name: single(c.name, c.functions["decode"], c.examples()["decode"]) for c in chunks}


@pytest.fixture(scope="module")
def head_fp32(decode_chunks, tmp_path_factory):
    """The decode head (norm + lm_head 64 -> 512) as an fp32 .pte."""
    chunk = decode_chunks["lm_head"]
    return write_fp32(chunk.stage, chunk.example, tmp_path_factory.mktemp("head"))


@pytest.mark.parametrize("quantize, max_ratio, min_cos", [("int8", 0.35, 0.999), ("int4", 0.22, 0.99)])
def test_head(decode_chunks, head_fp32, tmp_path, quantize, max_ratio, min_cos):
    chunk = decode_chunks["lm_head"]
    write_and_check(chunk.stage, chunk.example, tmp_path, quantize, head_fp32, max_ratio, min_cos)


def test_int4_decoder_layer(decode_chunks, tmp_path):
    """A whole decode layer (q/k/v with biases, GQA attention over the cache, SwiGLU MLP) in 8da4w."""
    chunk = decode_chunks["layers_01-01"]
    fp32 = write_fp32(chunk.stage, chunk.example, tmp_path)
    write_and_check(chunk.stage, chunk.example, tmp_path, "int4", fp32, 0.33, 0.98)


def test_int8_vision_block(tmp_path):
    """A tiny-clip encoder block (its stage holds the whole tower: only the block's linears are exported)."""
    tower = vision_preset("tiny-clip")
    plan = ReductionPlan("none", (1, 1), resolve_budget(1.0, 1, tower.side**2, 0.5))
    stages = [EmbedStage(tower), BlockStage(tower, plan, 0, 1), BlockStage(tower, plan, 1, 2)]
    pixels = torch.randn(1, 1, 3, tower.image_size, tower.image_size, generator=torch.Generator().manual_seed(0))
    example = stage_examples(stages, {contract.PIXEL_VALUES: pixels})[2]
    block = stages[2].eval()
    fp32 = write_fp32(block, example, tmp_path)
    write_and_check(block, example, tmp_path, "int8", fp32, 0.42, 0.999)


class ScaledHead(Stage):
    """A second function over the decode head's own norm and lm_head (logits of 2 * hidden)."""

    def __init__(self, head: HeadStage) -> None:
        super().__init__()
        self.norm, self.lm_head = head.norm, head.lm_head
        self.input_names, self.output_names = list(head.input_names), list(head.output_names)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(rms_norm(self.norm, 2 * hidden[:, 0]))


def test_multi_function_int4(decode_chunks, head_fp32, tmp_path):
    """Two methods sharing one lm_head: quantized once, stored once, both run."""
    chunk = decode_chunks["lm_head"]
    functions = {"plain": chunk.stage, "scaled": ScaledHead(chunk.stage).eval()}
    references = {f: outputs(s, chunk.example) for f, s in functions.items()}
    before = snapshot(chunk.stage)
    files = et.write(functions, chunk.example, tmp_path, "multi", quantize="int4")
    path = files.files[0][0]
    assert files.extra == {"quantization": contract.INT4_DYNAMIC}
    assert {f: e["method"] for f, e in files.functions.items()} == {f: contract.method_name(f) for f in functions}
    assert_delegated(path)
    for function, entry in files.functions.items():
        assert min_cosine(run_pte(path, entry["method"], chunk.example), references[function]) >= 0.99
    assert_untouched(chunk.stage, before, chunk.example, references["plain"])
    # one int4 head is 0.17x the fp32 head: the lm_head stored twice would be ~0.34x
    assert path.stat().st_size < 0.22 * head_fp32.stat().st_size


class OddWidth(Stage):
    """fc1 has 40 inputs (not a multiple of int4's group of 32), fc2 64."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(40, 64), nn.Linear(64, 40)
        self.input_names, self.output_names = ["x"], ["y"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x)))


def test_int4_odd_width_falls_back_to_int8(tmp_path):
    stage = OddWidth().eval()
    example = (torch.randn(1, 8, 40, generator=torch.Generator().manual_seed(1)),)
    copies = et.quantized_functions({"forward": stage}, "int4")
    fc1, fc2 = copies["forward"].fc1.weight, copies["forward"].fc2.weight
    assert (fc1.target_dtype, list(fc1.block_size)) == (torch.int8, [1, 40])  # per output channel
    assert (fc2.target_dtype, list(fc2.block_size)) == (torch.int4, [1, 32])
    assert type(stage.fc1.weight) is nn.Parameter and type(stage.fc2.weight) is nn.Parameter
    files = et.write({"forward": stage}, example, tmp_path, "odd", quantize="int4")
    assert files.extra == {"quantization": contract.INT4_DYNAMIC}
    assert_delegated(files.files[0][0])
    assert min_cosine(run_pte(files.files[0][0], contract.DEFAULT_METHOD, example), outputs(stage, example)) >= 0.99
    with pytest.raises(EdgetrimBug):
        et.quantized_functions({"forward": stage}, "int2")
