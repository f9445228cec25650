"""Whole VLM (HiRED vision + LLM) from a LLaVA-NeXT folder saved with save_pretrained, ONNX, through the CLI.

* ``edgetrim export --with-llm`` writes one vlm artifact whose manifest validates against the schema;
* the runtime pipeline's first-token logits and greedy tokens equal LlavaNextForConditionalGeneration's
  fed ``inputs_embeds`` built with the PyTorch HiRED tokens of the same image (K exact);
* the runtime pipeline runs with torch imports blocked;
* ``edgetrim run`` streams text and prints TTFT / decode tokens/s; ``edgetrim bench`` compares budgets;
* bad inputs exit 2 with one line: prompt longer than the cache, template without <image>,
  tokenizer files missing (export and run), unreadable image;
* ``--quantize int4`` (tiny-vlm preset): int8 MatMuls in the vision chunk, int4 MatMulNBits in the language
  model's layers, fidelity-gated against fp32,
  the language model still token-exact with transformers; the fidelity gate refuses strays.

Random weights: the generated text is meaningless, only the agreement matters.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from torchless import BLOCK_TORCH

from edgetrim.calib.sweep import budget_variant
from edgetrim.cli.main import main
from edgetrim.export.families.decoder import build_byte_tokenizer, tiny_qwen2_config
from edgetrim.export.validate import Fidelity, FidelityBelowGate, fidelity_case
from edgetrim.runtime.contract import IMAGE_TOKEN
from edgetrim.runtime.llm import load_tokenizer
from edgetrim.runtime.manifest import SCHEMA_PATH
from edgetrim.runtime.vlm import VlmPipeline, prompt_ids

PROMPT = "What is written on the sign in the picture?"
STEPS = 8
ATOL = 1e-4


@pytest.fixture(scope="module")
def llava_folder(tmp_path_factory):
    """A LLaVA-NeXT checkpoint (tiny CLIP 32px/8 + projector + 2-layer Qwen2) with tokenizer.json beside it."""
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    folder = tmp_path_factory.mktemp("llava-next")
    build_byte_tokenizer(folder)
    image_token = load_tokenizer(folder).token_to_id(IMAGE_TOKEN)
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=32, patch_size=8
    )
    config = LlavaNextConfig(vision_config=vision, text_config=tiny_qwen2_config(max_len=512))
    config.image_token_index = image_token
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(config).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # larger LM weights than the init: distinct logits, no near-ties in greedy decoding
        for name, param in model.named_parameters():
            if "language_model" in name or "lm_head" in name:
                scale = 0.1 if name.endswith("norm.weight") else 0.2
                param.copy_(
                    (1.0 if name.endswith("norm.weight") else 0.0) + scale * torch.randn(param.shape, generator=gen)
                )
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def artifact(llava_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("vlm") / "llava-next-vlm"
    args = ["export", "--target", "onnx", "--model", str(llava_folder), "--with-llm", "--out", str(out)]
    assert main([*args, "--budget", "0.2", "--grid", "2x2", "--chunks", "4", "--llm-chunks", "2"]) == 0
    return out


def test_manifest_is_one_vlm_artifact_and_matches_schema(artifact):
    from jsonschema import Draft202012Validator

    manifest = json.loads((artifact / "manifest.json").read_text())
    schema = json.loads(SCHEMA_PATH.read_text())
    assert [e.message for e in Draft202012Validator(schema).iter_errors(manifest)] == []
    assert manifest["kind"] == "vlm" and manifest["source"]["random_weights"] is False
    assert manifest["pipelines"] == {
        "vision": ["embed", "blocks_00-00", "blocks_01-01", "head"],
        "prefill": ["layers_00-00", "layers_01-01", "lm_head"],
        "decode": ["layers_00-00", "layers_01-01", "lm_head"],
    }
    k = manifest["reduction"]["tokens"]
    assert k == 16 and manifest["reduction"]["available_tokens"] == 80  # 5 views x 16 patches, 20%
    llm = manifest["llm"]
    assert llm["visual_tokens"] == k and llm["prefill_length"] == k + 64 and llm["max_length"] == k + 128
    assert llm["prefill_lengths"] == [k + 32, k + 64]  # halved text budgets down to 16, above the template
    assert {f["role"] for f in manifest["files"]} == {"embedding", "tokenizer"}
    report = json.loads((artifact / "report.json").read_text())
    assert report["validation"]["status"] == "passed"
    checked = [c["case"] for c in report["validation"]["cases"]]
    prompt = [c for c in checked if c.startswith("prefill/sample-0 + prompt")]
    assert len(prompt) == 3 and prompt[1:] == [f"prefill/sample-0 + prompt ({n} tokens)" for n in (k + 32, k + 64)]
    assert sum(c.startswith("vision/") for c in checked) == 4


def test_pipeline_matches_transformers_llava_next(artifact, llava_folder, sample_png):
    """First-token logits and STEPS greedy tokens == LlavaNext fed the PyTorch HiRED tokens of the same image."""
    from transformers import LlavaNextForConditionalGeneration

    from edgetrim.export.families.vision import load_tower
    from edgetrim.export.kinds.vision import reduction_plan
    from edgetrim.export.options import ExportOptions
    from edgetrim.export.stages.vision import ReducedVisionEncoder
    from edgetrim.runtime.preprocess import load_image

    pipeline = VlmPipeline(artifact)
    result = pipeline.generate(sample_png, PROMPT, STEPS, stop_at_eos=False)
    pipeline.close()
    tower = load_tower(str(llava_folder))
    module = ReducedVisionEncoder(tower, reduction_plan(tower, ExportOptions("onnx"), "vlm")).eval()
    pixels = torch.from_numpy(pipeline.pixel_values(load_image(sample_png)))
    model = LlavaNextForConditionalGeneration.from_pretrained(llava_folder).eval()
    tok = load_tokenizer(llava_folder)
    ids = prompt_ids(tok, pipeline.llm["template"], PROMPT, model.config.image_token_index)
    at = ids.index(model.config.image_token_index)
    with torch.no_grad():
        visual = module(pixels)[0][0]
        assert visual.shape == (16, 64)
        table = model.get_input_embeddings().weight
        seq = torch.cat([table[ids[:at]], visual, table[ids[at + 1 :]]])[None]
        assert result.prompt_tokens == seq.shape[1]
        expected, first = [], None
        for _ in range(STEPS):
            logits = model(inputs_embeds=seq).logits[0, -1]
            first = logits.numpy() if first is None else first
            expected.append(int(logits.argmax()))
            seq = torch.cat([seq, table[expected[-1]][None, None]], dim=1)
    assert np.abs(result.generation.first_logits - first).max() <= ATOL
    assert result.tokens == expected


def test_run_streams_and_reports(artifact, sample_png, capsys):
    assert main(["run", str(artifact), "--image", str(sample_png), "--prompt", PROMPT, "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    for word in ("TTFT", "tokens/s", "prefill", "visual tokens K", "16 of 80"):
        assert word in out, out


def test_bench_compares_budgets(artifact, tmp_path, capsys):
    args = ["bench", str(artifact), "--budgets", "1.0,0.2", "--max-new-tokens", "3", "--runs", "1"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "vlm_bench.json").read_text())
    rows = report["rows"]
    assert [(r["method"], r["visual_tokens"]) for r in rows] == [("none", 80), ("hired", 16)]
    assert rows[1]["prefill_length"] == rows[0]["prefill_length"] - 64
    assert rows[0]["ttft_ratio"] == 1.0 and rows[1]["new_tokens"] == 3
    assert (tmp_path / "vlm_bench.png").stat().st_size > 0 and "TTFT" in (tmp_path / "vlm_bench.md").read_text()
    assert "goals: ttft_20_le_0.30x" in capsys.readouterr().out


def one_line_error(capsys, *hints: str) -> None:
    captured = capsys.readouterr()
    message = captured.err.strip()
    assert len(message.splitlines()) == 1 and message.startswith("error:"), captured.err
    assert "Traceback" not in captured.err
    for hint in hints:
        assert hint in message, message


def test_prompt_longer_than_cache(artifact, sample_png, capsys):
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 20
    assert main(["run", str(artifact), "--image", str(sample_png), "--prompt", long_prompt]) == 2
    one_line_error(capsys, "longer than the exported prefill length")


def test_unreadable_image(artifact, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not an image")
    assert main(["run", str(artifact), "--image", str(bad)]) == 2
    one_line_error(capsys, "broken.png")


def test_missing_tokenizer_in_artifact(artifact, sample_png, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    (copy / "tokenizer.json").unlink()
    assert main(["run", str(copy), "--image", str(sample_png)]) == 2
    one_line_error(capsys, "tokenizer.json", "missing")


def test_export_refuses_template_without_image_and_folder_without_tokenizer(llava_folder, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["export", "--target", "onnx", "--model", str(llava_folder), "--with-llm", "--out", str(out)]
    assert main([*base, "--template", "USER: {prompt} ASSISTANT:"]) == 2
    one_line_error(capsys, "<image>")
    no_tok = tmp_path / "no-tokenizer"
    shutil.copytree(llava_folder, no_tok)
    (no_tok / "tokenizer.json").unlink()
    assert main([*base[:4], str(no_tok), *base[5:]]) == 2
    one_line_error(capsys, "tokenizer.json")
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


TORCH_FREE_RUN = (
    BLOCK_TORCH
    + r"""from edgetrim.runtime.vlm import VlmPipeline

result = VlmPipeline(sys.argv[1]).generate(sys.argv[2], sys.argv[3], 4, stop_at_eos=False)
print(json.dumps({"tokens": result.tokens, "torch": any(m.split(".")[0] == "torch" for m in sys.modules)}))
"""
)


def test_runtime_is_torch_free(artifact, sample_png):
    args = [sys.executable, "-c", TORCH_FREE_RUN, str(artifact), str(sample_png), PROMPT]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch"] is False
    pipeline = VlmPipeline(artifact)
    assert out["tokens"] == pipeline.generate(sample_png, PROMPT, 4, stop_at_eos=False).tokens
    pipeline.close()


def test_jetson_vlm_demo_on_the_cpu_provider(artifact, sample_png, tmp_path):
    app = BLOCK_TORCH + "from edgetrim_jetson.app import main\n\nsys.exit(main(sys.argv[1:]))\n"
    args = ["vlm", str(artifact), str(sample_png), "--prompt", PROMPT, "--max-new-tokens", "4", "--device", "cpu"]
    proc = subprocess.run([sys.executable, "-c", app, *args, "--cache", str(tmp_path)], capture_output=True,
                          text=True, errors="replace", timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    k = json.loads((artifact / "manifest.json").read_text())["reduction"]["tokens"]
    assert f"K = {k}, TTFT" in proc.stdout and "tok/s" in proc.stdout
    assert "chose: vision CPUExecutionProvider; language model CPUExecutionProvider" in proc.stdout


def test_quantized_export(tmp_path, sample_png):
    out = tmp_path / "tiny-vlm-int4"
    assert main(["export", "--target", "onnx", "--model", "tiny-vlm", "--quantize", "int4", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["validation"]["status"] == "fidelity"
    vision_cases = [c for c in report["validation"]["cases"] if "kept_overlap" in c]
    assert len(vision_cases) == 4 and all(c["k_exact"] and c["kept_overlap"] >= 0.9 for c in vision_cases)
    language_cases = [c for c in report["validation"]["cases"] if "logit_cosine" in c]
    assert len(language_cases) == 4  # calibration images x prompts, GATE_CASES of them
    from jsonschema import Draft202012Validator

    manifest = json.loads((out / "manifest.json").read_text())
    schema = json.loads(SCHEMA_PATH.read_text())
    assert [e.message for e in Draft202012Validator(schema).iter_errors(manifest)] == []
    marks = {c["name"]: c.get("quantization") for c in manifest["chunks"]}
    assert marks["encoder"] == "int8-dynamic"
    assert marks["lm_head"] == "int8-dynamic"
    layers = [n for n in manifest["pipelines"]["prefill"] if n != "lm_head"]
    assert layers and {marks[n] for n in layers} == {"int4-dynamic"}
    assert manifest["export_options"]["quantize"] == "int4"
    model = onnx.load(str(out / "00-encoder.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert ops & {"DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger"}, ops
    weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 4 * 3  # q/k/v/o + 2 MLP projections per layer, 3 layers (tiny CLIP)
    layer_graph = next(out / f["path"] for c in manifest["chunks"] if c["name"] == layers[0] for f in c["files"])
    assert "MatMulNBits" in {n.op_type for n in onnx.load(str(layer_graph), load_external_data=False).graph.node}
    pipeline = VlmPipeline(out)
    result = pipeline.generate(sample_png, "Describe the image.", 4, stop_at_eos=False)
    pipeline.close()
    assert result.visual_tokens == report["tokens"] and len(result.tokens) == 4
    variant = budget_variant(out, "0.5", tmp_path / "variants")  # what `edgetrim bench` compares it with
    m = json.loads((variant / "manifest.json").read_text())
    assert m["reduction"]["tokens"] == 160 and m["chunks"][0]["quantization"] == "int8-dynamic"
    assert m["export_options"]["quantize"] == "int4"


def test_int8_fidelity_gate_refuses_strays():
    rng = np.random.default_rng(0)
    ref = {
        "tokens": rng.standard_normal((1, 10, 8)).astype(np.float32),
        "positions": np.arange(0, 20, 2)[None],
        "partition_budgets": np.array([[6, 4]]),
    }
    gate = Fidelity()
    close = {**ref, "tokens": ref["tokens"] + 1e-3}
    assert fidelity_case("close", close, ref, gate)["passed"]
    moved = {**close, "positions": np.concatenate([ref["positions"][:, :8], [[17, 19]]], axis=1)}
    with pytest.raises(FidelityBelowGate, match="80% of kept positions shared.*milder quantize"):
        fidelity_case("moved", moved, ref, gate)
    noisy = {**ref, "tokens": ref["tokens"] + rng.standard_normal((1, 10, 8)).astype(np.float32)}
    with pytest.raises(FidelityBelowGate, match="min token cosine"):
        fidelity_case("noisy", noisy, ref, gate)
