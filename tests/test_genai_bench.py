"""onnxruntime-genai's model builder measured beside ours (``edgetrim bench --genai``), tiny-vlm preset, ONNX:

* ``--genai int4`` adds the builder's int4 model as a variant in the same rounds: its row (engine, precision,
  unpadded prompt, bytes), the ours / genai ratios and greedy agreement, in the JSON, the markdown and the summary;
* the builder's fp32 model (the same seeded weights, rebuilt from the preset) gives our fp32 artifact's first-token
  logits and greedy tokens from the same prompt embeddings; the build is cached and reused;
* the runner is torch-free; bad ``--genai`` values exit 2 with one line.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from torchless import BLOCK_TORCH

from edgetrim.cli.main import main
from edgetrim.export.build import export
from edgetrim.export.options import ExportOptions
from edgetrim.runtime.genai_bench import ENGINE, ENTRY, GenaiVlmPipeline
from edgetrim.runtime.vlm import VlmPipeline

pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed: pip install 'edgetrim[genai]'")

PROMPT = "Describe the image in one sentence."
STEPS = 8


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """tiny-vlm, ONNX fp32, HiRED 20%."""
    out = tmp_path_factory.mktemp("genai") / "tiny-vlm"
    export(ExportOptions(target="onnx", model="tiny-vlm", out=out, validate=False))
    return out


@pytest.fixture(scope="module")
def fp32_build(artifact):
    from edgetrim.export.genai import build_genai

    return build_genai(artifact, "fp32")


def test_bench_measures_the_builder_beside_ours(artifact, tmp_path, capsys):
    args = ["bench", str(artifact), "--budgets", "0.2", "--genai", "int4", "--max-new-tokens", "4", "--runs", "1"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "vlm_bench.json").read_text())
    assert report["meta"]["genai"] == ["int4"]
    ours, genai = report["rows"]
    assert (ours["engine"], genai["engine"]) == ("edgetrim", ENGINE)
    assert genai["genai_precision"] == genai["quantize"] == "int4" and genai["onnxruntime_genai"] == "0.18.0"
    # the same artifact's image, prompt and K visual tokens; the builder's graph runs the prompt unpadded
    assert genai["artifact"] == ours["artifact"] and genai["visual_tokens"] == ours["visual_tokens"]
    assert genai["prompt_tokens"] == ours["prompt_tokens"] == genai["prefill_length"] < ours["prefill_length"]
    assert len(genai["tokens"]) == len(ours["tokens"]) == 4
    # int4 MatMulNBits vs our fp32 layers; the whole pipeline as run: our vision + table, the builder's LM
    assert 0 < genai["lm_bytes"] < ours["lm_bytes"]
    assert genai["artifact_bytes"] == ours["artifact_bytes"] - ours["lm_bytes"] + genai["lm_bytes"]
    assert genai["ours_over_genai_decode"] == pytest.approx(ours["decode_tokens_per_s"] / genai["decode_tokens_per_s"])
    assert genai["ours_over_genai_prefill"] == pytest.approx(ours["prefill_ms"] / genai["prefill_ms"])
    assert genai["greedy_agree"] == (genai["tokens"] == ours["tokens"]) and genai["vs_ours"] == "20%"
    assert "| 20% genai-int4 | 20% |" in (tmp_path / "vlm_bench.md").read_text()
    out = capsys.readouterr().out
    assert "20% / 20% genai-int4 (onnxruntime-genai 0.18.0" in out and "decode tok/s" in out, out


def test_fp32_build_gives_our_logits_and_tokens(artifact, fp32_build, sample_png):
    from edgetrim.export.genai import build_genai

    ours = VlmPipeline(artifact).generate(sample_png, PROMPT, STEPS, stop_at_eos=False)
    theirs = GenaiVlmPipeline(artifact, fp32_build).generate(sample_png, PROMPT, STEPS, stop_at_eos=False)
    a, b = ours.generation.first_logits, theirs.generation.first_logits
    assert a.shape == b.shape and np.abs(a).max() > 1  # distinct logits (random weights)
    np.testing.assert_allclose(b, a, atol=1e-4)
    assert theirs.tokens == ours.tokens and len(ours.tokens) == STEPS
    entry = json.loads((fp32_build / ENTRY).read_text())
    assert entry["precision"] == "fp32" and entry["source"]["preset"] == "tiny-vlm"
    stamp = (fp32_build / ENTRY).stat().st_mtime_ns
    assert build_genai(artifact, "fp32") == fp32_build and (fp32_build / ENTRY).stat().st_mtime_ns == stamp  # cached


def test_genai_runner_is_torch_free(artifact, fp32_build, sample_png):
    code = BLOCK_TORCH + (
        "from edgetrim.runtime.genai_bench import GenaiVlmPipeline\n"
        "r = GenaiVlmPipeline(sys.argv[1], sys.argv[2]).generate(sys.argv[4], sys.argv[3], 4, stop_at_eos=False)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'tokens': r.tokens}))\n"
    )
    args = [sys.executable, "-c", code, str(artifact), str(fp32_build), PROMPT, str(sample_png)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch"] is False
    assert out["tokens"] == VlmPipeline(artifact).generate(sample_png, PROMPT, 4, stop_at_eos=False).tokens


@pytest.mark.parametrize("value", ["int3", "int4,int4", ""])
def test_bad_genai_values_exit_2(artifact, tmp_path, capsys, value):
    assert main(["bench", str(artifact), "--genai", value, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--genai" in err and "int4 or int4,fp32" in err, err


def test_every_session_stops_spinning_at_the_end_of_a_run(artifact, fp32_build):
    """A pipeline runs several sessions in turn (vision chunks, layer groups, head): each of ours, and the builder's
    beside them, stops its intra-op threads spinning when a run ends, so they do not take the next session's cores."""
    ours, theirs = VlmPipeline(artifact), GenaiVlmPipeline(artifact, fp32_build)
    loaders = (ours.vision, ours.lm.prefill, ours.lm.decode)
    sessions = [backend.session for loader in loaders for backend in loader.resident.values()]
    assert len(sessions) >= 3
    for session in [*sessions, theirs.lm.session]:
        assert session.get_session_options().get_session_config_entry("session.force_spinning_stop") == "1"
