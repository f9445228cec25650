"""Quantized exports (ONNX): int4 / int8 language-model layers, an int8 head and int8 vision chunks,
held to fidelity gates on a calibration set; the option's refusals.

* tiny-qwen2 ``--quantize int4``: MatMulNBits in every layer graph, an int8 head, the chunk marks, under
  0.4x the fp32 bytes, the gates' figures in the report (random weights: reported, not gated), and the
  torch-free runtime generates from it.
* tiny-qwen2 (its head tied to the embedding) ``int4`` and ``int8``: the table and the head are one copy,
  int8_block: the head's MatMulNBits (bits 8) reads the embedding files themselves, the artifact's table +
  head bytes are under what two int8 copies take; the rows the runtime reads are the head's dequantized
  weight rows, within half a step of the float table; a manifest that names the tied table inconsistently
  (no scales, no tie, a tie to no chunk) or a flipped table byte is refused in one line.
* An untied checkpoint folder (llama-shaped) keeps the per-row int8 table apart from its int8 head: a
  quarter of the float32 bytes, rows within half a step of the float table; without the scales file it is
  refused.
* A checkpoint folder (save_pretrained) is gated: an unreachable gate refuses the export in one line.
* The gates themselves on synthetic logits; calibration folders (unreadable images skipped and counted).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_bad_input import assert_user_error, edgetrim_export

from edgetrim.cli.main import main
from edgetrim.export.families.decoder import random_causal_lm, tiny_llama_config, tiny_qwen2_config
from edgetrim.export.validate import FidelityBelowGate, LanguageFidelity, language_fidelity_case, language_fidelity_gate
from edgetrim.runtime import contract
from edgetrim.runtime.embedding import EmbeddingTable
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import open_artifact

QUANTIZED_OPS = {"MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


def ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


def float_weight_matmuls(path) -> list[str]:
    """MatMul / Gemm nodes whose weight is a float initializer (attention's activation products are not)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    floats = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in floats]


@pytest.fixture(scope="module")
def int4_lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantized")
    out = root / "lm-int4"
    assert main(["export", "--target", "onnx", "--model", "tiny-qwen2", "--quantize", "int4", "--out", str(out)]) == 0
    fp32 = root / "lm-fp32"
    assert main(["export", "--target", "onnx", "--model", "tiny-qwen2", "--no-validate", "--out", str(fp32)]) == 0
    return out, fp32


def test_int4_language_model(int4_lm, capsys):
    out, fp32 = int4_lm
    manifest = json.loads((out / "manifest.json").read_text())
    marks = {c["name"]: c.get("quantization") for c in manifest["chunks"]}
    assert marks == {
        "layers_00-01": contract.INT4_DYNAMIC,
        "lm_head": contract.INT8_DYNAMIC,
    }
    for chunk in manifest["chunks"]:
        graph = out / chunk["files"][0]["path"]
        assert float_weight_matmuls(graph) == [], chunk["name"]
        assert "MatMulNBits" in ops(graph), (chunk["name"], ops(graph))  # the head: bits 8, the tied table
    assert manifest["export_options"]["quantize"] == "int4"

    def weight_bytes(chunks: list[dict]) -> dict[str, int]:  # the shared external data (graphs: ~15 KB each)
        return {c["name"]: sum(f["bytes"] for f in c["files"] if f["role"] == "external_data") for c in chunks}

    sizes = weight_bytes(manifest["chunks"])
    float_sizes = weight_bytes(json.loads((fp32 / "manifest.json").read_text())["chunks"])
    assert sizes["layers_00-01"] < 0.4 * float_sizes["layers_00-01"], (sizes, float_sizes)

    report = json.loads((out / "report.json").read_text())
    assert report["quantization"]["mode"] == "int4"
    calib = report["quantization"]["calibration"]
    assert calib["source"] == "built-in" and calib["prompts"] == 4 and len(calib["sha256"]) == 64
    validation = report["validation"]
    assert validation["status"] == "fidelity" and "not gated" in validation["note"]
    cases = [c for c in validation["cases"] if "logit_cosine" in c]
    assert len(cases) == 4 and all(-1 <= c["logit_cosine"] <= 1 for c in cases)
    agreement = next(c for c in validation["cases"] if c["case"] == "prefill/agreement")
    assert agreement["gated"] is False and 0 <= agreement["top1_agreement"] <= 1

    capsys.readouterr()
    assert main(["run", str(out), "--prompt", "Hello there", "--max-new-tokens", "3"]) == 0
    assert "tokens/s" in capsys.readouterr().out


def run_refusal(root: Path) -> str:
    """``edgetrim run`` on ``root`` in a subprocess: refused (exit 2) in one line, returned."""
    run = [sys.executable, "-m", "edgetrim.cli.main", "run", str(root), "--prompt", "Hi", "--max-new-tokens", "2"]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1, message
    return message


def damaged_copy(out: Path, folder: Path, manifest: dict) -> Path:
    shutil.copytree(out, folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def int8_lm(tmp_path_factory):
    out = tmp_path_factory.mktemp("quantized") / "lm-int8"
    assert main(["export", "--target", "onnx", "--model", "tiny-qwen2", "--quantize", "int8", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("mode", ["int4", "int8"])
def test_the_tied_table_and_head_are_stored_once(mode, int4_lm, int8_lm, tmp_path):
    out, fp32 = (int4_lm[0] if mode == "int4" else int8_lm), int4_lm[1]
    manifest, float_manifest = (json.loads((root / "manifest.json").read_text()) for root in (out, fp32))
    llm = manifest["llm"]
    assert (llm["embedding_dtype"], llm["embedding_tied"]) == (contract.EMBEDDING_INT8_BLOCK, "lm_head")
    assert "embedding_tied" not in float_manifest["llm"] and float_manifest["llm"]["embedding_dtype"] == "float32"
    files = {f["role"]: f for f in manifest["files"]}
    values = np.load(out / files[contract.EMBEDDING]["path"])
    scales = np.load(out / files[contract.EMBEDDING_SCALES]["path"])
    reference = np.load(fp32 / {f["role"]: f for f in float_manifest["files"]}[contract.EMBEDDING]["path"])
    (v, d), block = values.shape, 64  # the largest of 128, 64, 32 dividing D (64)
    assert (values.dtype, scales.dtype, scales.shape) == (np.uint8, np.float32, (v, d // block))

    # one copy: the head's graphs read the embedding files (past the 128-byte .npy header), their own external
    # data holds the final norm alone; table + scales + head chunk < two int8 [V, D] copies
    header = 128
    head = next(c for c in manifest["chunks"] if c["name"] == "lm_head")
    for entry in head["files"]:
        if entry["role"] == "external_data":
            assert entry["bytes"] == 4 * d  # the norm's weight [D] float32
            continue
        graph = onnx.load(str(out / entry["path"]), load_external_data=False).graph
        [node] = [n for n in graph.node if n.op_type == "MatMulNBits"]
        assert {a.name: a.i for a in node.attribute if a.name in ("bits", "block_size")} == {
            "bits": 8,
            "block_size": block,
        }
        refs = {t.name: {e.key: e.value for e in t.external_data} for t in graph.initializer}
        assert refs[node.input[1]] == {
            "location": files[contract.EMBEDDING]["path"],
            "offset": str(header),
            "length": str(v * d),
        }
        assert refs[node.input[2]]["location"] == files[contract.EMBEDDING_SCALES]["path"]
    table_bytes = files[contract.EMBEDDING]["bytes"] + files[contract.EMBEDDING_SCALES]["bytes"]
    assert table_bytes == (v * d + header) + (4 * v * d // block + header)
    head_bytes = sum(f["bytes"] for f in head["files"])
    assert head_bytes < v * d / 2 and table_bytes + head_bytes < 2 * v * d, (table_bytes, head_bytes)

    # the rows the runtime reads are the head's dequantized weight rows, within half a step of the float rows
    graph = onnx.load(str(out / head["files"][0]["path"]))  # external data resolved: the embedding files' bytes
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in graph.graph.initializer}
    [node] = [n for n in graph.graph.node if n.op_type == "MatMulNBits"]
    q = weights[node.input[1]].reshape(v, d).astype(np.float32) - 128
    head_weight = q * np.repeat(weights[node.input[2]].reshape(v, d // block), block, axis=1)
    artifact = open_artifact(out)
    assert artifact.weight_bytes(head) == head_bytes + table_bytes  # memory plans count what the head reads
    table = EmbeddingTable.open(artifact)
    ids = [5, 0, v - 1, 5, 77]
    rows = table.rows(ids)
    np.testing.assert_array_equal(rows, head_weight[ids])
    step = np.repeat(scales[ids], block, axis=1)
    error = np.abs(rows - reference[ids])
    assert rows.dtype == np.float32 and np.all(error <= step / 2 * (1 + 1e-6)) and error.max() > 0
    assert mode == "int8" or json.loads((out / "report.json").read_text())["validation"]["status"] == "fidelity"
    if mode == "int8":
        report = json.loads((out / "report.json").read_text())
        cases = [c for c in report["validation"]["cases"] if "logit_cosine" in c]
        assert len(cases) == 4 and min(c["logit_cosine"] for c in cases) > 0.99, cases  # int8: close to float

    # refused in one line: a tied table without its scales, a tie to no chunk, an int8_block table untied,
    # a flipped byte of the shared table
    no_scales = json.loads(json.dumps(manifest))
    no_scales["files"] = [f for f in manifest["files"] if f["role"] != contract.EMBEDDING_SCALES]
    broken = damaged_copy(out, tmp_path / "no-scales", no_scales)
    (broken / files[contract.EMBEDDING_SCALES]["path"]).unlink()
    assert "embedding_dtype is int8_block but the artifact lists no embedding_scales file" in run_refusal(broken)
    nowhere = json.loads(json.dumps(manifest))
    nowhere["llm"]["embedding_tied"] = "lm_tail"
    assert "llm.embedding_tied names no chunk" in run_refusal(damaged_copy(out, tmp_path / "nowhere", nowhere))
    untied = json.loads(json.dumps(manifest))
    del untied["llm"]["embedding_tied"]
    with pytest.raises(UserError, match="int8_block without llm.embedding_tied"):
        open_artifact(damaged_copy(out, tmp_path / "untied", untied))
    flipped = damaged_copy(out, tmp_path / "flipped", manifest)
    with (flipped / files[contract.EMBEDDING]["path"]).open("r+b") as fh:
        fh.seek(header + 3)
        byte = fh.read(1)
        fh.seek(header + 3)
        fh.write(bytes([byte[0] ^ 1]))
    assert "sha256" in run_refusal(flipped)


def test_an_untied_table_is_int8_with_row_scales(tmp_path):
    folder = tmp_path / "llama"
    random_causal_lm(tiny_llama_config(max_len=64), seed=5).save_pretrained(folder)
    out, fp32 = tmp_path / "int8", tmp_path / "fp32"
    args = ["export", "--target", "onnx", "--model", str(folder), "--prefill-length", "16"]
    assert main([*args, "--quantize", "int8", "--no-validate", "--out", str(out)]) == 0
    assert main([*args, "--no-validate", "--out", str(fp32)]) == 0
    manifest, float_manifest = (json.loads((root / "manifest.json").read_text()) for root in (out, fp32))
    assert (manifest["llm"]["embedding_dtype"], float_manifest["llm"]["embedding_dtype"]) == ("int8", "float32")
    assert "embedding_tied" not in manifest["llm"]
    head = next(c for c in manifest["chunks"] if c["name"] == "lm_head")
    assert ops(out / head["files"][0]["path"]) & QUANTIZED_OPS  # its own int8 copy: the head is not the table
    files = {f["role"]: f for f in manifest["files"]}
    float_files = {f["role"]: f for f in float_manifest["files"]}
    assert contract.EMBEDDING_SCALES not in float_files
    values = np.load(out / files[contract.EMBEDDING]["path"])
    scales = np.load(out / files[contract.EMBEDDING_SCALES]["path"])
    reference = np.load(fp32 / float_files[contract.EMBEDDING]["path"])  # the same checkpoint, float32
    (v, d), header = values.shape, 128
    assert (values.dtype, scales.dtype, scales.shape, reference.dtype) == (np.int8, np.float32, (v,), np.float32)
    assert files[contract.EMBEDDING]["bytes"] == v * d + header  # 1 byte a value...
    assert float_files[contract.EMBEDDING]["bytes"] == 4 * v * d + header  # ...of 4
    assert files[contract.EMBEDDING]["bytes"] + files[contract.EMBEDDING_SCALES]["bytes"] < 0.3 * (4 * v * d)

    table = EmbeddingTable.open(open_artifact(out))
    ids = [5, 0, v - 1, 5]
    rows = table.rows(ids)
    error = np.abs(rows - reference[ids])
    assert rows.dtype == np.float32 and np.all(error <= scales[ids][:, None] / 2 * (1 + 1e-6)) and error.max() > 0
    np.testing.assert_array_equal(rows, values[ids] * scales[ids][:, None])

    broken = tmp_path / "no-scales"
    shutil.copytree(out, broken)
    (broken / files[contract.EMBEDDING_SCALES]["path"]).unlink()
    manifest["files"] = [f for f in manifest["files"] if f["role"] != contract.EMBEDDING_SCALES]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert "embedding_dtype is int8 but the artifact lists no embedding_scales file" in run_refusal(broken)


def test_int8_vision_encoder_with_a_calibration_folder(tmp_path, sample_png):
    calib = tmp_path / "calib"
    calib.mkdir()
    for name in ("a.png", "b.jpg"):
        from PIL import Image

        Image.open(sample_png).convert("RGB").resize((96 + len(name) * 8, 80)).save(calib / name)
    (calib / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "clip-int8"
    args = ["export", "--target", "onnx", "--model", "tiny-clip", "--quantize", "int8"]
    assert main([*args, "--calib-images", str(calib), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    described = report["quantization"]["calibration"]
    assert described["images"] == 2 and len(described["skipped"]) == 1 and "broken.png" in described["skipped"][0]
    gated = [c for c in report["validation"]["cases"] if "kept_overlap" in c]
    assert [c["case"].rsplit("/", 1)[1] for c in gated] == ["a.png", "b.jpg"]
    assert all(c["k_exact"] and c["passed"] for c in gated)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {c.get("quantization") for c in manifest["chunks"]} == {contract.INT8_DYNAMIC}
    assert manifest["export_options"]["calib_images"] == str(calib)


def test_a_checkpoint_folder_is_gated_and_refused_below_the_gate(tmp_path):
    folder = tmp_path / "qwen"
    random_causal_lm(tiny_qwen2_config(max_len=64), seed=5).save_pretrained(folder)
    proc = edgetrim_export(tmp_path, "--model", str(folder), "--quantize", "int4", "--gate-logit-cosine", "0.999999")
    assert "--gate-logit-cosine 0.999999" in assert_user_error(proc, tmp_path, "first-token logit cosine", "--quantize")


def test_language_gates_on_synthetic_logits():
    rng = np.random.default_rng(0)
    ref = {contract.LOGITS: rng.standard_normal(50).astype(np.float32), "token_ids": np.array([3, 4, 5, 6])}
    gate = LanguageFidelity(min_top1=0.9, min_logit_cosine=0.99, min_greedy=0.75)
    same = language_fidelity_case("same", ref, ref, gate)
    assert same["top1_agrees"] and same["logit_cosine"] == pytest.approx(1.0) and same["greedy_agreement"] == 1.0
    drifted = {contract.LOGITS: ref[contract.LOGITS] + 1e-3, "token_ids": np.array([3, 4, 9, 6])}
    case = language_fidelity_case("drifted", drifted, ref, gate)
    assert case["greedy_agreement"] == 0.5  # tokens agree up to the first miss: 2 of 4
    noisy = {contract.LOGITS: rng.standard_normal(50).astype(np.float32), "token_ids": ref["token_ids"]}
    with pytest.raises(FidelityBelowGate, match="logit cosine .* below gate_logit_cosine 0.99"):
        language_fidelity_case("noisy", noisy, ref, gate)
    assert not language_fidelity_case("noisy", noisy, ref, LanguageFidelity(gated=False))["passed"]
    with pytest.raises(FidelityBelowGate, match="greedy agreement 0.75 over 2 .* below gate_greedy 0.8"):
        language_fidelity_gate([same, case], LanguageFidelity(min_greedy=0.8))
    assert language_fidelity_gate([same, case], LanguageFidelity(min_greedy=0.8, gated=False))["gated"] is False


@pytest.mark.parametrize(
    ("args", "hints"),
    [
        (["--model", "tiny-clip", "--quantize", "int3"], ["--quantize 'int3' is unknown", "none, int8, int4"]),
        (["--model", "tiny-clip", "--quantize", "int4"], ["not available for vision-encoder", "none, int8"]),
        (["--model", "tiny-clip", "--gate-overlap", "0.5"], ["--gate-overlap", "quantized exports"]),
        (["--model", "tiny-qwen2", "--quantize", "int8", "--gate-top1", "1.5"], ["--gate-top1 1.5", "[0, 1]"]),
    ],
    ids=["unknown", "int4-vision", "gate-alone", "gate-range"],
)
def test_refusals(args, hints, tmp_path):
    assert_user_error(edgetrim_export(tmp_path, *args), tmp_path, *hints)


def test_calibration_folder_refusals(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    quantized = ("--model", "tiny-clip", "--quantize", "int8")
    assert_user_error(edgetrim_export(tmp_path, *quantized, "--calib-images", str(empty)), tmp_path, "holds no images")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"nope")
    proc = edgetrim_export(tmp_path, *quantized, "--calib-images", str(broken))
    assert_user_error(proc, tmp_path, "none of its 1 images can be read")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n\n")
    proc = edgetrim_export(tmp_path, "--model", "tiny-qwen2", "--quantize", "int8", "--calib-prompts", str(prompts))
    assert_user_error(proc, tmp_path, "holds no prompts")


def test_bench_compares_precisions_side_by_side(tmp_path, capsys):
    out = tmp_path / "tiny-vlm"
    assert main(["export", "--target", "onnx", "--model", "tiny-vlm", "--no-validate", "--out", str(out)]) == 0
    bench = tmp_path / "bench"
    args = ["bench", str(out), "--budgets", "0.2", "--precisions", "none,int8", "--max-new-tokens", "3"]
    assert main([*args, "--runs", "1", "--out", str(bench)]) == 0
    rows = json.loads((bench / "vlm_bench.json").read_text())["rows"]
    assert [(r["quantize"], r["requested_budget"]) for r in rows] == [("none", "0.2"), ("int8", "0.2")]
    assert rows[0]["artifact"] == str(out) and rows[0]["bytes_ratio"] == 1.0  # the artifact is the float variant
    assert rows[1]["bytes_ratio"] < 0.8 and rows[1]["new_tokens"] == 3
    variant = json.loads((Path(rows[1]["artifact"]) / "manifest.json").read_text())
    assert {c.get("quantization") for c in variant["chunks"]} == {contract.INT8_DYNAMIC}
    assert "20% int8" in (bench / "vlm_bench.md").read_text() and (bench / "vlm_bench.png").stat().st_size > 0
    assert "int8" in capsys.readouterr().out
    assert main([*args[:-4], "--precisions", "int2"]) == 2
