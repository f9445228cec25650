"""Language-model export with a static KV cache: parity with transformers on tiny seeded models.

* prefill logits of the ONNX and ExecuTorch chunks == Qwen2ForCausalLM's (<= 1e-4), prompt
  shorter than the static prefill (right padding);
* 16 greedy decode steps with the static cache == full recomputation with transformers (token-exact);
* ``edgetrim.runtime.llm`` generates without torch (import blocked) and matches ``generate``;
* a Llama-shaped model exports too (prefill parity); CoreML conversion succeeds (spec check).

Random weights: the generated text is meaningless, only the agreement matters.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torchless import BLOCK_TORCH

from edgetrim.export.build import export
from edgetrim.export.families.decoder import (
    build_byte_tokenizer,
    random_causal_lm,
    tiny_llama_config,
    tiny_qwen2_config,
)
from edgetrim.export.options import ExportOptions
from edgetrim.runtime.contract import IMAGE_TOKEN
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.llm import LanguageModelRunner, load_tokenizer

MAX_LEN, PREFILL = 64, 40
PROMPT = "<|im_start|>user\n<image>\nDescribe the image in one sentence.<|im_end|>\n<|im_start|>assistant\n"
VISUAL_TOKENS = 6
STEPS = 16
ATOL = 1e-4


def export_llm(model, out, target, max_len, prefill, groups=1, fp16=None) -> dict:
    """``model`` saved with save_pretrained, then that folder exported as a language-model artifact."""
    folder = out.with_name(out.name + "-checkpoint")
    model.save_pretrained(folder)
    opts = ExportOptions(target, str(folder), out, fp16=fp16, prefill_length=prefill, max_length=max_len)
    opts.llm_chunks = groups
    report = export(opts)
    assert report["kind"] == "language-model" and report["validation"]["status"] in ("passed", "spec-only")
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def qwen():
    model = random_causal_lm(tiny_qwen2_config(max_len=MAX_LEN), seed=3)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    build_byte_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def exported(qwen, tmp_path_factory):
    """{'onnx': folder (2 layer groups), 'executorch': folder (1 layer group)}."""
    root = tmp_path_factory.mktemp("llm")
    out = {}
    for target, groups in (("onnx", 2), ("executorch", 1)):
        out[target] = root / target
        export_llm(qwen, out[target], target, MAX_LEN, PREFILL, groups=groups)
    return out


@pytest.fixture(scope="module")
def prompt(qwen, tokenizer_dir):
    """(ids, visual [K, D], image token id, spliced embeddings [n, D])."""
    tok = load_tokenizer(tokenizer_dir)
    ids = tok.encode(PROMPT).ids
    image = tok.token_to_id(IMAGE_TOKEN)
    visual = np.random.default_rng(0).normal(0, 0.5, (VISUAL_TOKENS, qwen.config.hidden_size)).astype(np.float32)
    table = qwen.get_input_embeddings().weight.detach().numpy()
    at = ids.index(image)
    embeds = np.concatenate([table[ids[:at]], visual, table[ids[at + 1 :]]])
    assert embeds.shape[0] < PREFILL
    return ids, visual, image, embeds


def hf_last_logits(model, embeds: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(inputs_embeds=torch.from_numpy(embeds)[None]).logits[0, -1].numpy()


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_prefill_logits_match_transformers(target, qwen, exported, prompt):
    ids, visual, image, embeds = prompt
    runner = LanguageModelRunner.from_folder(exported[target])
    spliced = runner.embed(ids, visual, image)
    np.testing.assert_array_equal(spliced, embeds)
    got = runner.generate(spliced, max_new_tokens=1).first_logits
    assert np.abs(got - hf_last_logits(qwen, embeds)).max() <= ATOL


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_static_cache_decode_equals_full_recomputation(target, qwen, exported, prompt):
    embeds = prompt[3]
    result = LanguageModelRunner.from_folder(exported[target]).generate(embeds, max_new_tokens=STEPS + 1)
    table = qwen.get_input_embeddings().weight.detach().numpy()
    seq, expected = embeds, []
    for _ in range(STEPS + 1):
        expected.append(int(np.argmax(hf_last_logits(qwen, seq))))
        seq = np.concatenate([seq, table[expected[-1]][None]])
    assert result.tokens == expected
    assert len(result.step_s) == STEPS and result.decode_tokens_per_s > 0 and result.ttft_s > 0


GENERATE = r"""
import json
import numpy as np
from edgetrim.runtime.llm import LanguageModelRunner, load_tokenizer

folder, tokenizer_dir, visual, prompt, steps = sys.argv[1:6]
tok = load_tokenizer(tokenizer_dir)
runner = LanguageModelRunner.from_folder(folder)
embeds = runner.embed(tok.encode(prompt).ids, np.load(visual), tok.token_to_id("<image>"))
result = runner.generate(embeds, int(steps))
torch_loaded = any(m == "torch" or m.startswith("torch.") for m in sys.modules)
print(json.dumps({"tokens": result.tokens, "torch": torch_loaded, "text": tok.decode(result.tokens)}))
"""


def test_runtime_generates_without_torch_like_transformers(qwen, exported, prompt, tokenizer_dir, tmp_path):
    visual = tmp_path / "visual.npy"
    np.save(visual, prompt[1])
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + GENERATE, str(exported["onnx"]), str(tokenizer_dir), str(visual)]
        + [PROMPT, "8"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch"] is False
    with torch.no_grad():
        ref = qwen.generate(inputs_embeds=torch.from_numpy(prompt[3])[None], max_new_tokens=8, do_sample=False)
    assert out["tokens"] == ref[0].tolist()


def test_prompt_longer_than_prefill_is_refused(exported, qwen):
    runner = LanguageModelRunner.from_folder(exported["onnx"])
    with pytest.raises(UserError, match="longer than the exported prefill length"):
        runner.generate(np.zeros((PREFILL + 1, qwen.config.hidden_size), np.float32), 1)
    with pytest.raises(UserError, match="exceed the KV cache"):
        runner.generate(np.zeros((PREFILL, qwen.config.hidden_size), np.float32), MAX_LEN)
    with pytest.raises(UserError, match="image placeholders"):
        runner.embed([1, 2, 3], np.zeros((2, qwen.config.hidden_size), np.float32), 9)


def test_llama_prefill_parity_and_coreml_conversion(tmp_path):
    from edgetrim.export.targets.coreml import spec_summary

    model = random_causal_lm(tiny_llama_config(max_len=MAX_LEN), seed=5)
    export_llm(model, tmp_path / "onnx", "onnx", MAX_LEN, 16)
    embeds = np.random.default_rng(1).normal(0, 0.5, (11, model.config.hidden_size)).astype(np.float32)
    got = LanguageModelRunner.from_folder(tmp_path / "onnx").generate(embeds, 1).first_logits
    assert np.abs(got - hf_last_logits(model, embeds)).max() <= ATOL

    manifest = export_llm(model, tmp_path / "coreml", "coreml", MAX_LEN, 16, fp16=True)
    assert manifest["pipelines"] == {"prefill": ["layers_00-01", "lm_head"], "decode": ["layers_00-01", "lm_head"]}
    assert manifest["llm"]["prefill_lengths"] == [16]  # a 16-token text budget: no smaller bucket
    for chunk in manifest["chunks"]:  # one multifunction package: prefill and decode over one copy of the weights
        assert [f["role"] for f in chunk["files"]] == ["program"]
        functions = spec_summary(tmp_path / "coreml" / chunk["files"][0]["path"])["functions"]
        assert set(functions) == {"forward_prefill_16", "forward_decode"}
        for entry in chunk["functions"].values():
            spec = functions[entry["method"]]
            for io in ("inputs", "outputs"):
                assert [(t["name"], t["shape"]) for t in spec[io]] == [(t["name"], t["shape"]) for t in entry[io]]
        assert chunk["functions"]["decode"]["inputs"][0]["shape"] == [1, 1, model.config.hidden_size]
    # the default KV cache is Core ML state (iOS 18): written by prefill, updated in place by decode
    layers = manifest["chunks"][0]
    states = spec_summary(tmp_path / "coreml" / layers["files"][0]["path"])["functions"]["forward_decode"]["states"]
    assert [s["name"] for s in states] == [s["name"] for s in layers["states"]] == [
        "key_cache_00", "value_cache_00", "key_cache_01", "value_cache_01"
    ]
    c = model.config
    cache = [1, c.num_key_value_heads, MAX_LEN, c.hidden_size // c.num_attention_heads]
    assert all(s["shape"] == cache and s["dtype"] == "float16" for s in layers["states"])
    assert [i["name"] for i in layers["functions"]["decode"]["inputs"]] == ["inputs_embeds", "position"]
    assert manifest["llm"]["kv_cache"] == "state"
    with pytest.raises(UserError, match="Core ML state"):
        LanguageModelRunner.from_folder(tmp_path / "coreml")


def test_coreml_ios17_form_keeps_the_cache_as_inputs_and_outputs(tmp_path):
    """`kv_cache` io: one iOS 17 package per function (no multifunction), past_* in and present_* out."""
    from edgetrim.export.targets.coreml import spec_summary

    model = random_causal_lm(tiny_llama_config(max_len=MAX_LEN), seed=5)
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    opts = ExportOptions("coreml", str(folder), tmp_path / "io", prefill_length=16, max_length=MAX_LEN, kv_cache="io")
    assert export(opts)["validation"]["status"] == "spec-only"
    manifest = json.loads((tmp_path / "io" / "manifest.json").read_text())
    assert manifest["llm"]["kv_cache"] == "io"
    layers = manifest["chunks"][0]
    assert "states" not in layers and [f["role"] for f in layers["files"]] == ["program", "program_decode"]
    decode = spec_summary(tmp_path / "io" / layers["functions"]["decode"]["file"])
    assert decode["deployment_target"] == "iOS17" and decode["functions"]["main"]["states"] == []
    assert [i["name"] for i in decode["functions"]["main"]["inputs"]][:4] == [
        "inputs_embeds", "position", "past_key_00", "past_value_00"
    ]
    with pytest.raises(UserError, match="kv_cache"):
        export(ExportOptions("onnx", str(folder), tmp_path / "onnx", kv_cache="state"))


def weight_bytes(modules) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_prefill_buckets_and_decode_share_one_copy_of_the_weights(target, qwen, exported):
    """Every chunk holds prefill_20, prefill_40 (the default bucket: half the text budget) and decode over one
    copy of its weights; the runtime prefills a short prompt at 20 and a long one at 40, both exact."""
    root = exported[target]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["llm"]["prefill_lengths"] == [20, PREFILL]
    layers = qwen.model.layers
    for chunk in manifest["chunks"]:
        assert list(chunk["functions"]) == ["prefill_20", "prefill_40", "decode"]
        inputs = {f: e["inputs"][0]["shape"][1] for f, e in chunk["functions"].items()}
        assert inputs == {"prefill_20": 20, "prefill_40": PREFILL, "decode": 1}
        stored = sum(f["bytes"] for f in chunk["files"])
        if chunk["name"] == "lm_head":
            one_copy = weight_bytes([qwen.lm_head, qwen.model.norm])
        else:
            first, last = (int(x) for x in chunk["name"].removeprefix("layers_").split("-"))
            one_copy = weight_bytes(layers[first : last + 1])
        # graphs, RoPE tables and masks come on top (much of it at this tiny size); two copies would be >= 2x
        assert one_copy <= stored < 1.6 * one_copy, (chunk["name"], stored, one_copy)
    runner = LanguageModelRunner.from_folder(root)
    for n, bucket in ((11, 20), (20, 20), (21, PREFILL), (PREFILL, PREFILL)):
        embeds = np.random.default_rng(n).normal(0, 0.5, (n, qwen.config.hidden_size)).astype(np.float32)
        gen = runner.generate(embeds, 2)
        assert gen.prefill_length == bucket
        assert np.abs(gen.first_logits - hf_last_logits(qwen, embeds)).max() <= ATOL
        # one prefill length resident at a time (each holds its own packed weights), decode beside it
        assert {function for _, function in runner.prefill.resident} == {f"prefill_{bucket}"}
        assert {function for _, function in runner.decode.resident} == {"decode"}


def test_llava_folder_language_model(tmp_path):
    """The language model read from a LLaVA folder (save_pretrained) gives the LLaVA model's own logits."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    from edgetrim.export.families.decoder import load_causal_lm
    from edgetrim.export.stages.base import block_groups
    from edgetrim.export.stages.base import run_stages as run_torch_stages
    from edgetrim.export.stages.decoder import LanguageModel, build_llm_stages
    from edgetrim.runtime.contract import INPUTS_EMBEDS, LAST_INDEX, LOGITS

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    vision.update({"image_size": 32, "patch_size": 8})
    torch.manual_seed(0)
    llava = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=tiny_qwen2_config())).eval()
    llava.save_pretrained(tmp_path)
    lm = LanguageModel(load_causal_lm(tmp_path), MAX_LEN, 12)
    embeds = torch.randn(1, 12, 64, generator=torch.Generator().manual_seed(2))
    env = run_torch_stages(
        build_llm_stages(lm, block_groups(2, 2), 12), {INPUTS_EMBEDS: embeds, LAST_INDEX: torch.tensor([11])}
    )
    with torch.no_grad():
        ref = llava(inputs_embeds=embeds).logits[0, -1]
    assert (env[LOGITS][0] - ref).abs().max() <= ATOL


def test_onnx_layers_run_fused_contrib_ops(qwen, exported):
    """Every ONNX layer graph (each prefill length and decode) holds, per layer, one GroupQueryAttention (its rotary
    on) fed by one packed q/k/v MatMul of width (H + 2 KV) hd, SkipSimplifiedLayerNormalization between the
    sublayers, and no Softmax (attention is not written out)."""
    import onnx

    cfg = qwen.config
    hd = cfg.hidden_size // cfg.num_attention_heads
    width = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * hd
    manifest = json.loads((exported["onnx"] / "manifest.json").read_text())
    for chunk in (c for c in manifest["chunks"] if c["name"].startswith("layers_")):
        first, last = (int(x) for x in chunk["name"].removeprefix("layers_").split("-"))
        layers = last - first + 1
        for function, entry in chunk["functions"].items():
            graph = onnx.load(str(exported["onnx"] / entry["file"]), load_external_data=False).graph
            ops = [n.op_type for n in graph.node]
            assert ops.count("GroupQueryAttention") == layers and "Softmax" not in ops, (function, ops)
            assert ops.count("SkipSimplifiedLayerNormalization") == 2 * layers - 1, (function, ops)
            producers = {out: n for n in graph.node for out in n.output}
            shapes = {t.name: list(t.dims) for t in graph.initializer}
            for node in (n for n in graph.node if n.op_type == "GroupQueryAttention"):
                attrs = {a.name: a.i for a in node.attribute if a.type == onnx.AttributeProto.INT}
                assert attrs["num_heads"] == cfg.num_attention_heads and attrs["do_rotary"] == 1
                assert attrs["kv_num_heads"] == cfg.num_key_value_heads
                packed = producers[node.input[0]]  # q/k/v bias Add, then the MatMul
                matmul = producers[packed.input[0]] if packed.op_type == "Add" else packed
                assert matmul.op_type == "MatMul" and shapes[matmul.input[1]] == [cfg.hidden_size, width]


@pytest.mark.parametrize("config", [tiny_qwen2_config, tiny_llama_config])
def test_fused_stages_equal_the_written_out_layers(config):
    """The fused stages' reference math (what validation holds the ONNX graphs to) equals the written-out stages
    the other targets export: prefill at a bucket and a decode step mid-cache, caches included; a fused decode
    zeroes the rows after its position (the written-out one keeps them; no step reads them)."""
    from edgetrim.export.stages.base import block_groups, run_stages
    from edgetrim.export.stages.decoder import LanguageModel, build_llm_stages
    from edgetrim.runtime.contract import INPUTS_EMBEDS, LAST_INDEX, POSITION, past_names

    model = random_causal_lm(config(max_len=MAX_LEN), seed=5)
    plain, fused = (LanguageModel(model, 32, [8, 16], fused=f).eval() for f in (False, True))
    embeds = torch.randn(1, 8, model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    prefill = {INPUTS_EMBEDS: embeds, LAST_INDEX: torch.tensor([5])}
    envs = [run_stages(build_llm_stages(lm, block_groups(2, 2), 8), prefill) for lm in (plain, fused)]
    for name, value in envs[0].items():
        assert torch.allclose(value, envs[1][name], atol=1e-5), name
    position = 11
    decode = {INPUTS_EMBEDS: embeds[:, :1], POSITION: torch.tensor([position])}
    caches = torch.randn(4, 1, model.config.num_key_value_heads, 32, plain.dims.head_dim)
    decode |= dict(zip([n for i in range(2) for n in past_names(i)], caches, strict=True))
    envs = [run_stages(build_llm_stages(lm, block_groups(2, 2), None), decode) for lm in (plain, fused)]
    for name, value in envs[0].items():
        got = envs[1][name]
        if name.startswith("present_"):
            assert not got[:, :, position + 1 :].any(), name
            value, got = value[:, :, : position + 1], got[:, :, : position + 1]
        assert torch.allclose(value, got, atol=1e-5), name


def test_standard_ops_on_request_and_llm_ops_refusals(tmp_path, capsys):
    """``--llm-ops standard`` exports the written-out layers (standard ONNX ops: for TensorRT and other runtimes),
    validated like the fused ones; an unknown value, or the option on another target, is refused in one line."""
    import onnx

    from edgetrim.cli.main import main

    out = tmp_path / "standard"
    args = ["export", "--target", "onnx", "--model", "tiny-qwen2", "--llm-ops", "standard", "--out", str(out)]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["export_options"]["llm_ops"] == "standard"
    report = json.loads((out / "report.json").read_text())
    assert report["validation"]["status"] == "passed"
    for chunk in manifest["chunks"]:
        for entry in chunk["functions"].values():
            graph = onnx.load(str(out / entry["file"]), load_external_data=False).graph
            assert all(n.domain in ("", "ai.onnx") for n in graph.node), (entry["file"], {n.domain for n in graph.node})
    capsys.readouterr()
    for target, value, hint in (("onnx", "bogus", "choose fused or standard"), ("executorch", "fused", "for onnx")):
        args = ["export", "--target", target, "--model", "tiny-qwen2", "--llm-ops", value, "--out", str(tmp_path / "x")]
        assert main(args) == 2
        message = capsys.readouterr().err.strip()
        assert len(message.splitlines()) == 1 and hint in message and "Traceback" not in message, message
        assert not (tmp_path / "x").exists()
