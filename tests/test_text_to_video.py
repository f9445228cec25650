"""Text -> video in one command across three artifacts: t5-tiny -> stdit3-tiny -> tiny-vae (ONNX, random weights).

* ``edgetrim run DENOISER --text-encoder T5 --decoder VAE --prompt-text ...`` with torch blocked writes a video.mp4
  that PyAV reads back with the decoder's frame count and size, the latent the text's caption gives (computed
  again here stage by stage), and run.json with each stage's time and peak memory and a timeline of every step;
* ``edgetrim bench DENOISER --decoder VAE --text-encoder T5`` runs plain vs TDTM + LPL vs TDTM + LPL under a budget,
  each stage measured, the decoder streaming under the budget;
* bad input: a decoder of other latent channels, a decoder missing a stage, a text encoder of another width, an
  artifact of the wrong kind, bench options without a decoder -> one line, exit 2, nothing written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from torchless import BLOCK_TORCH

from edgetrim.cli.main import main
from edgetrim.export.build import export
from edgetrim.export.options import ExportOptions
from edgetrim.runtime import contract

TEXT = "a red fox running through snow"
SAMPLING = ["--steps", "4", "--merge-steps", "2", "--leap-at", "2"]
STAGES = [contract.TEXT_ENCODER, contract.VIDEO_DENOISER, contract.VIDEO_DECODER]


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """stdit3-tiny, t5-tiny and tiny-vae exported to ONNX, the decoder paired with the denoiser."""
    root = tmp_path_factory.mktemp("text-to-video")
    out = {"denoiser": root / "denoiser", "text_encoder": root / "t5", "decoder": root / "vae"}
    export(ExportOptions(target="onnx", model="stdit3-tiny", out=out["denoiser"]))
    export(ExportOptions(target="onnx", model="t5-tiny", out=out["text_encoder"]))
    export(ExportOptions(target="onnx", model="tiny-vae", denoiser=out["denoiser"], out=out["decoder"]))
    return out


RUN_WITHOUT_TORCH = (
    BLOCK_TORCH
    + r"""from edgetrim.cli.main import main

denoiser, encoder, decoder, out, text, *sampling = sys.argv[1:]
code = main(["run", denoiser, "--text-encoder", encoder, "--decoder", decoder, "--prompt-text", text, "--out", out,
             *sampling])
print("RC", code, "TORCH", any(m == "torch" or m.startswith("torch.") for m in sys.modules))
"""
)


def test_prompt_text_to_a_playable_video_without_torch(roots, tmp_path):
    import av

    from edgetrim.runtime.text import encode_prompt
    from edgetrim.runtime.video import VideoDenoiser

    out = tmp_path / "out"
    args = [roots["denoiser"], roots["text_encoder"], roots["decoder"], out, TEXT, *SAMPLING]
    proc = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_TORCH, *map(str, args)], capture_output=True, text=True, timeout=300
    )
    assert "RC 0 TORCH False" in proc.stdout, proc.stdout + proc.stderr

    decoder = json.loads((roots["decoder"] / contract.MANIFEST).read_text())["decoder"]
    height, width = decoder["pixel_size"]
    with av.open(str(out / "video.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == decoder["pixel_frames"] == 13  # 4 latent frames: 1 + 3 x 4 video frames
    assert {f.shape for f in frames} == {(height, width, 3)} == {(64, 64, 3)}

    with VideoDenoiser(roots["denoiser"]) as denoiser:  # the latent is the one the text's caption gives
        caption = encode_prompt(roots["text_encoder"], TEXT, *denoiser.caption_shape(), None)
        want = denoiser.generate(caption, 4, 2, 2, None, None, 0).latent
    assert np.allclose(np.load(out / "latent.npy"), want, atol=1e-5)

    run = json.loads((out / "run.json").read_text())
    assert [s["stage"] for s in run["stages"]] == STAGES
    assert all(s["ms"] > 0 and s["peak_rss_mb"] > 0 for s in run["stages"])
    assert run["video"]["frames_shape"] == [13, 64, 64, 3] and run["caption"].startswith(repr(TEXT))
    steps = [s for s in run["timeline"] if s["stage"] == contract.VIDEO_DENOISER and s["lane"] == "compute"]
    assert [s["label"] for s in steps] == run["functions"] == ["tdtm", "tdtm", "plain"]
    assert all(a["end_ms"] <= b["start_ms"] for a, b in zip(steps, steps[1:], strict=False))
    decoded = [s for s in run["timeline"] if s["stage"] == contract.VIDEO_DECODER]
    assert min(s["start_ms"] for s in decoded) >= steps[-1]["end_ms"]  # the stages run one after another
    assert {p.name for p in out.iterdir()} == {
        "latent.npy",
        "contact_sheet.png",
        "video.mp4",
        "video.gif",
        "timeline.png",
        "run.json",
    }


def test_bench_measures_every_stage_and_streams_the_decoder(roots, tmp_path, capsys):
    code = main(
        [
            "bench",
            str(roots["denoiser"]),
            "--decoder",
            str(roots["decoder"]),
            "--text-encoder",
            str(roots["text_encoder"]),
            "--steps",
            "4",
            "--memory-budget",
            "0.7",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "text_to_video_bench.json").read_text())
    runs = report["runs"]
    assert list(runs) == ["plain", "tdtm_lpl", "tdtm_lpl_budget"]
    assert runs["plain"]["evaluations"] == 4 and runs["tdtm_lpl"]["evaluations"] == 3
    assert runs["tdtm_lpl"]["tdtm_evaluations"] == 2 and runs["tdtm_lpl"]["leap_step"] == 2
    assert all([s["stage"] for s in run["stages"]] == STAGES for run in runs.values())
    assert "streamed" in runs["tdtm_lpl_budget"]["plans"][contract.VIDEO_DECODER]
    assert runs["tdtm_lpl"]["plans"][contract.VIDEO_DECODER].count("all chunks resident") == 2
    measured = [r["measurement"] for r in report["rows"]]
    assert measured == [f"{s} time" for s in STAGES] + ["all stages time"] + [f"{s} peak RSS" for s in STAGES]
    assert all(r["ratio"] > 0 for r in report["rows"])
    assert (tmp_path / "timeline.png").is_file() and "| video-decoder peak RSS" in (
        tmp_path / "text_to_video_bench.md"
    ).read_text()


def edited(src: Path, dst: Path, edit) -> Path:
    """A copy of an artifact whose manifest ``edit`` changed (its files stay as they are)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / contract.MANIFEST).read_text())
    edit(manifest)
    (dst / contract.MANIFEST).write_text(json.dumps(manifest))
    return dst


def test_mismatched_or_broken_artifacts_are_refused_before_anything_runs(roots, tmp_path, capsys):
    other_channels = edited(roots["decoder"], tmp_path / "c8", lambda m: m["decoder"].update(latent_channels=8))
    missing = edited(roots["decoder"], tmp_path / "missing", lambda m: m["pipelines"]["spatial"].remove("spatial_up_1"))
    wide = edited(roots["text_encoder"], tmp_path / "wide", lambda m: m["text_encoder"].update(hidden_size=64))
    den, t5, vae, out = roots["denoiser"], roots["text_encoder"], roots["decoder"], tmp_path / "out"
    cases = [
        (["--text-encoder", t5, "--decoder", other_channels], "decodes 8-channel latents but the denoiser makes 4"),
        (["--text-encoder", t5, "--decoder", missing], "which no earlier chunk produces"),
        (["--text-encoder", wide, "--decoder", vae], "gives 64-wide embeddings, the denoiser takes 32"),
        (["--text-encoder", t5, "--decoder", t5], "text-encoder"),
    ]
    for args, says in cases:
        code = main(["run", str(den), *map(str, args), "--prompt-text", TEXT, "--out", str(out), *SAMPLING])
        err = capsys.readouterr().err.strip()
        assert code == 2 and says in err and "\n" not in err, err
        assert not out.exists()
    for args, says in (
        (["--text-encoder", t5], "--text-encoder applies to the text -> video bench: add --decoder DIR"),
        (["--decoder", vae, "--step-repeats", "2"], "--step-repeats applies to the denoiser bench"),
        (["--decoder", other_channels], "decodes 8-channel latents"),
    ):
        code = main(["bench", str(den), *map(str, args), "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and says in err and "\n" not in err, err
        assert not out.exists()
