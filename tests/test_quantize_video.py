"""Quantized video exports: ``--quantize int8`` on the ``video-denoiser`` (STDiT3) and ``text-encoder`` (T5)
kinds, held to their fidelity gates; int4 refused.

* stdit3-tiny ONNX int8: caption, embed and depth chunks marked and quantized (no float weight MatMul
  left), final float; the velocity cosines of every gated sampling step x both functions in the report
  and the summary, the guided one being what the runtime's sampler computes; chunk bytes well below fp32.
* t5-tiny ONNX and ExecuTorch int8: block chunks marked, the caption gate's figures per calibration prompt.
* t5-tiny CoreML int8: the spec check finds the quantized weights (no numbers on Linux).
* A gate nothing can pass refuses the export in one line (exit 2), nothing written.

ExecuTorch STDiT3 is not exported here: lowering its int8 two-function depth chunks takes minutes on 2
cores. At these widths (hidden 64 / d_model 32) graph and program overhead is a large share of a chunk:
the ratios below are against the chunk's fp32 parameter bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from edgetrim.cli.main import main
from edgetrim.export import options
from edgetrim.export.build import export
from edgetrim.export.families import t5
from edgetrim.export.families.stdit3 import VideoShape, build_preset
from edgetrim.export.kinds import video
from edgetrim.export.kinds.base import Quantization, quantization
from edgetrim.export.options import ExportOptions
from edgetrim.export.validate import GUIDED, FidelityBelowGate, VelocityFidelity, cosine, validate
from edgetrim.runtime import contract
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.video import Caption, VideoDenoiser

INT8 = contract.INT8_DYNAMIC


def manifest(root: Path) -> dict:
    return json.loads((root / contract.MANIFEST).read_text())


def param_bytes(*modules: torch.nn.Module) -> int:
    """fp32 bytes of the distinct parameters of ``modules``."""
    params = {id(p): p for m in modules for p in m.parameters()}
    return sum(p.numel() * 4 for p in params.values())


def float_weight_matmuls(path: Path) -> list[str]:
    graph = onnx.load(str(path), load_external_data=False).graph
    floats = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in floats]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("quantize-video")


@pytest.fixture(scope="module")
def denoiser(root) -> tuple[Path, dict]:
    out = root / "stdit3-onnx"
    return out, export(ExportOptions(target="onnx", model="stdit3-tiny", quantize="int8", out=out))


@pytest.fixture(scope="module")
def tiny():
    return build_preset("stdit3-tiny")


def test_denoiser_int8_chunks(denoiser, tiny):
    out, _ = denoiser
    m = manifest(out)
    marks = {c["name"]: c.get("quantization") for c in m["chunks"]}
    assert marks == {"caption": INT8, "embed": INT8, "depth_00": INT8, "depth_01": INT8, "final": None}
    assert m["export_options"]["quantize"] == "int8"
    for chunk in m["chunks"]:
        graphs = [out / f["path"] for f in chunk["files"] if f["role"] != contract.EXTERNAL_DATA]
        left = [n for g in graphs for n in float_weight_matmuls(g)]
        assert (left == []) == (chunk["name"] != "final"), (chunk["name"], left)
    # both functions' graphs read one weights file: the int8 weights are stored once
    depth = next(c for c in m["chunks"] if c["name"] == "depth_00")
    weights = [f for f in depth["files"] if f["role"] == contract.EXTERNAL_DATA]
    assert len(weights) == 1
    blocks = (tiny.spatial_blocks[0], tiny.temporal_blocks[0])
    assert weights[0]["bytes"] < 0.3 * param_bytes(*blocks)  # int8 + per-channel scales + float norms/biases
    assert sum(f["bytes"] for f in depth["files"]) < 0.45 * param_bytes(*blocks)  # + two graphs
    embed = next(c for c in m["chunks"] if c["name"] == "embed")
    modules = (tiny.t_embedder, tiny.fps_embedder, tiny.t_block, tiny.x_embedder)
    assert sum(f["bytes"] for f in embed["files"]) < 0.45 * param_bytes(*modules)


def test_denoiser_velocity_gate_in_report_and_summary(denoiser, capsys):
    out, report = denoiser
    assert json.loads((out / contract.REPORT).read_text()) == report
    q = report["quantization"]
    assert q["mode"] == "int8" and q["calibration"]["source"] == "seeded"
    steps = q["calibration"]["steps"]
    assert len(steps) == video.GATE_STEPS and steps[0] == 0 and steps[-1] == video.SCHEDULER["num_steps"] - 1
    v = report["validation"]
    assert v["status"] == "fidelity" and "random weights: gated all the same" in v["note"]
    gated = [c for c in v["cases"] if "velocity_cosine" in c]
    assert [c["case"].split("/")[0] for c in gated] == ["denoiser:plain"] * 4 + ["denoiser:tdtm"] * 4
    figures = [c["velocity_cosine"] for c in gated]
    assert all(VelocityFidelity.min_cosine <= f < 0.99999 for f in figures), figures  # quantized, and close
    # guidance (g = 7) amplifies the rounding in the small caption-driven difference: the guided cosine is lower
    assert all(0.9 < c["guided_cosine"] < c["velocity_cosine"] and 0 < c["caption_effect"] < 1 for c in gated)
    assert f"denoiser (plain) over 4 sampling steps: velocity cosine >= {min(figures[:4]):.4f}" in v["note"]
    assert "guided cosine mostly measures rounding noise" in v["note"]
    from edgetrim.cli.render import export_summary

    export_summary(report)
    printed = " ".join(capsys.readouterr().out.split())
    assert f"velocity cosine >= {min(figures[4:]):.4f}" in printed and "calibration seeded" in printed


def test_velocity_gate_measures_what_the_sampler_runs(denoiser, tiny):
    """The gate's guided figure for a step is the cosine of ``VideoDenoiser``'s guided velocity (the one the
    sampler integrates) to the float model's on the same inputs; a floor above a measured velocity
    cosine refuses this very artifact."""
    out, report = denoiser
    shape = VideoShape(2, *video.TINY_LATENT, fps=video.FPS)
    check = video.gate_checks(tiny, shape, Quantization("int8", None, None, None, VelocityFidelity()))[1]
    case = check.cases[1]
    f = case.feeds
    with VideoDenoiser(out) as runner:
        mask = f[contract.CAPTION_MASK]
        y_cond, y_null = runner.encode_caption(Caption(f[contract.CAPTION_EMBEDS][0], mask))
        velocity = runner.guided_velocity(y_cond, y_null, mask, video.SCHEDULER["cfg_scale"])
        got = velocity(f[contract.LATENT], float(f[contract.TIMESTEP][0]), contract.TDTM)
    figures = next(c for c in report["validation"]["cases"] if c["case"] == f"denoiser:tdtm/{case.name}")
    assert cosine(got, case.expected[GUIDED]) == pytest.approx(figures["guided_cosine"], abs=1e-6)
    strict = VelocityFidelity(min_cosine=figures["velocity_cosine"] + 1e-6)
    with pytest.raises(FidelityBelowGate, match=r"velocity cosine 0\.99\d+ is below gate_velocity_cosine"):
        validate(out, video.gate_checks(tiny, shape, Quantization("int8", None, None, None, strict)), 1e-4)


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_text_encoder_int8(root, target):
    out = root / f"t5-{target}"
    report = export(ExportOptions(target=target, model="t5-tiny", quantize="int8", out=out))
    m = manifest(out)
    marks = {c["name"]: c.get("quantization") for c in m["chunks"]}
    assert marks == {"embed": None, "block_00": INT8, "block_01": INT8, "final": None}
    model, _, _ = t5.load_t5("t5-tiny")
    for i in range(2):
        chunk = next(c for c in m["chunks"] if c["name"] == f"block_{i:02d}")
        program = sum(f["bytes"] for f in chunk["files"] if f["role"] != contract.EXTERNAL_DATA)
        weights = sum(f["bytes"] for f in chunk["files"]) - program
        fp32 = param_bytes(model.encoder.block[i])
        if target == "onnx":
            assert weights < 0.3 * fp32, (weights, fp32)
        else:  # one .pte: program and weights
            assert program < 0.8 * fp32, (program, fp32)
    calib = report["quantization"]["calibration"]
    assert (calib["source"], calib["prompts"], calib["images"]) == ("built-in", 4, 0)
    v = report["validation"]
    gated = [c for c in v["cases"] if "caption_cosine" in c]
    assert [c["case"] for c in gated] == [f"text_encoder/prompt-{i}" for i in range(4)]
    assert all(options.TEXT_GATES["gate_caption_cosine"] <= c["caption_cosine"] < 0.99999 for c in gated), gated
    assert v["status"] == "fidelity" and "caption cosine (every position) >=" in v["note"]


def test_text_encoder_coreml_int8_spec(root):
    out = root / "t5-coreml"
    report = export(ExportOptions(target="coreml", model="t5-tiny", quantize="int8", out=out))
    v = report["validation"]
    assert v["status"] == "spec-only" and "quantized weights present" in v["note"]
    marks = {c["name"]: c.get("quantization") for c in manifest(out)["chunks"]}
    assert marks == {"embed": None, "block_00": contract.INT8_WEIGHT, "block_01": contract.INT8_WEIGHT, "final": None}
    assert report["precision"] == "fp32"


def test_unreachable_gate_refuses_in_one_line(tmp_path, capsys, monkeypatch):
    """The CLI's exit 2 for a failed gate, one line naming the metric and its value; nothing written."""
    monkeypatch.setitem(options.TEXT_OPTIONS, "gate_caption_cosine", 1.0)
    out = tmp_path / "t5"
    assert main(["export", "--target", "onnx", "--model", "t5-tiny", "--quantize", "int8", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: validation failed (FidelityBelowGate)"), err
    assert "caption cosine 0.99" in err and "--gate-caption-cosine 1.0" in err  # the CLI names its flag
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["--target", "onnx", "--model", "stdit3-tiny"], "int4 is not available for video-denoiser models on onnx"),
        (
            ["--target", "executorch", "--model", "t5-tiny"],
            "int4 is not available for text-encoder models on executorch",
        ),
        (["--target", "coreml", "--model", "t5-tiny"], "int4 is not available for text-encoder models on coreml"),
    ],
)
def test_int4_refused(tmp_path, capsys, args, hint):
    assert main(["export", *args, "--quantize", "int4", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--quantize {hint}: it can do none, int8" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kind", "name"),
    [(contract.VIDEO_DENOISER, "gate_velocity_cosine"), (contract.TEXT_ENCODER, "gate_caption_cosine")],
)
def test_gate_options_need_quantize(kind, name):
    with pytest.raises(UserError, match=f"{name} applies to quantized exports"):
        quantization(ExportOptions(target="onnx", **{name: 0.9}), kind, ("int8",), True)
    with pytest.raises(UserError, match=f"{name} 1.5 must lie in"):
        quantization(ExportOptions(target="onnx", quantize="int8", **{name: 1.5}), kind, ("int8",), True)
