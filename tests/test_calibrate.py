"""``edgetrim calibrate``: the budget search on a VLM whose answer lives in a planted region, one vision pass per
image, the report files, ``export --budget auto --calibration``, and the refusals (one line, exit 2).

The planted VLM is tiny-vlm with weights set by hand, at grid 1x1 (one view of 8x8 = 64 patches):
- vision: 8 patches carry a large position-embedding component on channel 0; the feature layer's query is a
  constant and its key reads channel 0, so the CLS attention ranks exactly those 8 patches first; the
  projector maps them to a large channel-0 vector and every other patch to ~0 there.
- language: layer 0 attends uniformly (zero queries) and its value reads channel 0 minus 7.5 x channel 1,
  which only one text token (the "sink") carries; everything else in both layers is switched off. The first
  token is A when the prompt holds all 8 planted tokens (8 - 7.5 > 0), B with 7 or fewer.
So a budget keeps the answer iff K >= 8: budgets 0.11 (K 7) and below must miss the target, 0.125 (K 8) meet it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_refusals import one_line

from edgetrim.calib.calibrate import CalibrateOptions, LanguageSide, VisionPasses, calibrate
from edgetrim.calib.data import read_images
from edgetrim.calib.samples import sample_images
from edgetrim.cli.main import main
from edgetrim.export.kinds import vision, vlm
from edgetrim.export.options import ExportOptions

PLANTED = [r * 8 + c for r in (2, 3) for c in (2, 3, 4, 5)]  # patch indices of the planted region
BUDGETS = "0.05,0.1,0.11,0.125,0.15,0.25,0.5,1.0"  # K = 3, 6, 7, 8, 9, 16, 32, 64
PROMPTS = ("What is it?", "Name the thing.")
ANSWER, OTHER = 100, 101  # token ids of the first answer with / without every planted patch


def write_set(folder: Path, images: int = 2) -> tuple[Path, Path]:
    """Two sample images and two prompts on disk."""
    (folder / "images").mkdir(parents=True)
    for i, img in enumerate(sample_images(images, seed=5)):
        img.save(folder / "images" / f"img-{i}.png")
    (folder / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return folder / "images", folder / "prompts.txt"


def plant_vision(tower) -> None:
    """The planted patches: ranked first by the feature layer's CLS attention, projected to channel 0."""
    with torch.no_grad():
        for idx in PLANTED:
            tower.position_table[1 + idx, 0] += 30.0  # row 0 is CLS
        attn = tower.layers[-1].self_attn  # the feature layer, where HiRED reads its selection scores
        attn.q_proj.weight.zero_()
        attn.q_proj.bias.fill_(1.0)  # every query the same: the CLS row ranks keys alone
        attn.k_proj.weight.zero_()
        attn.k_proj.weight[:, 0] = 1.0  # key = channel 0 of the layer's normalized input
        attn.k_proj.bias.zero_()
        first, second = tower.projector.linear_1, tower.projector.linear_2
        first.weight[0].zero_()
        first.weight[0, 0], first.bias[0] = 10.0, -45.0  # unit 0 fires when channel 0 > 4.5
        second.weight[:, 0] = 0.0
        second.weight[:2].zero_()
        second.bias[:2] = 0.0
        second.weight[0, 0] = 30.0  # output channel 0 = 30 x unit 0; channel 1 = 0


def plant_language(model, sink: int) -> None:
    """First token ANSWER iff the prompt holds at least 8 planted tokens (see the module docstring)."""
    table = model.model.embed_tokens.weight
    assert model.lm_head.weight.data_ptr() == table.data_ptr()  # tied: the head reads the same rows
    first, second = model.model.layers
    with torch.no_grad():
        table[:, :3] = 0.0
        table[sink] = 0.0
        table[sink, 1] = 1.0
        table[ANSWER, 2], table[OTHER, 2] = 5.0, -5.0
        first.input_layernorm.weight.fill_(1.0)
        attn = first.self_attn
        attn.q_proj.weight.zero_()
        attn.q_proj.bias.zero_()  # zero queries: uniform attention over the prefix
        attn.v_proj.weight.zero_()
        attn.v_proj.bias.zero_()
        attn.v_proj.weight[0, 0], attn.v_proj.weight[0, 1] = 10.0, -75.0  # planted (+1 each) vs sink (-7.5)
        attn.o_proj.weight.zero_()
        attn.o_proj.weight[2, 0] = 1000.0  # into channel 2, which the ANSWER / OTHER rows read
        for layer in (first, second):
            layer.mlp.down_proj.weight.zero_()
        second.self_attn.o_proj.weight.zero_()


def planted_vlm(scratch: Path) -> vlm.VlmSource:
    src = vlm.load_preset("tiny-vlm", scratch, None)
    plant_vision(src.tower)
    language = LanguageSide.of(src)
    items = [language.prompt(p) for p in PROMPTS]
    once = [t for t in items[0] if all(ids.count(t) == 1 for ids in items) and t != src.image_token_id]
    assert once and ANSWER not in sum(items, []) and OTHER not in sum(items, [])
    plant_language(src.model, once[0])
    return src


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    images, prompts = write_set(root / "set")
    return planted_vlm(root / "tokenizer"), images, prompts


def test_the_planted_model_hides_its_answer_in_the_planted_patches(planted):
    """The construction itself: HiRED ranks the planted patches first, and only they decide the first token."""
    src, images, _ = planted
    geometry = vision.reduction_plan(src.tower, ExportOptions(target="onnx", reduce="none", grid="1x1"), "vlm")
    passes, language = VisionPasses(src.tower, geometry), LanguageSide.of(src)
    for image in read_images(images)[0]:
        encoded = passes.encode(image)
        top = encoded["select_scores"][0].argsort(descending=True)[: len(PLANTED)]
        assert sorted(top.tolist()) == PLANTED
        full = passes.tokens(encoded, None)
        assert (full[PLANTED, 0] > 500).all() and abs(full[:, 1]).max() < 1e-6
        for kept, answer in ((full, ANSWER), (full[PLANTED], ANSWER), (full[PLANTED[:7]], OTHER)):
            assert language.answer(language.prompt(PROMPTS[0]), kept, 1)["token_ids"][0] == answer


@pytest.mark.parametrize("metric", ["first-token", "kl"])
def test_calibrate_keeps_the_planted_patches_and_refuses_smaller_budgets(planted, metric, tmp_path):
    src, images, prompts = planted
    calls = []
    hook = src.tower.patch_embedding.register_forward_hook(lambda *_: calls.append(1))
    try:
        opts = CalibrateOptions(
            out=tmp_path / "report",
            calib_images=images,
            calib_prompts=prompts,
            target_fidelity=0.95,
            metric=metric,
            budgets=BUDGETS,
            greedy_tokens=2,
            grid="1x1",
        )
        report = calibrate(opts, source=(src.tower, src))
    finally:
        hook.remove()
    assert len(calls) == report["vision_passes"] == 2  # one per image, not per image x prompt x budget
    assert report["items"] == 4 and report["metric"] == metric
    chosen = report["chosen"]
    assert (chosen["budget"], chosen["tokens"]) == (0.125, len(PLANTED))
    rows = {r["budget"]: r for r in report["candidates"]}
    for budget in (0.05, 0.1, 0.11):  # drop at least one planted patch: the answer changes on every item
        assert not rows[budget]["meets_target"]
        assert rows[budget]["metrics"]["first-token"]["mean"] == 0.0
        assert rows[budget]["kl_divergence"]["mean"] > 5
    for budget in (0.125, 0.15, 0.25, 0.5, 1.0):
        assert rows[budget]["meets_target"] and rows[budget]["metrics"]["greedy"]["min"] == 1.0
    assert rows[1.0]["metrics"]["kl"]["min"] == pytest.approx(1.0)
    files = [Path(f) for f in report["files"]]
    assert [f.name for f in files] == ["report.json", "report.md", "fidelity_vs_budget.png"]
    assert all(f.stat().st_size > 0 for f in files)
    assert json.loads(files[0].read_text())["chosen"]["budget"] == 0.125
    table = files[1].read_text()
    assert "| 0.125 | 0.5 | 8 / 64 |" in table and "**chosen**" in table


# ---------------------------------------------------------------------------------- CLI: report -> export


@pytest.fixture(scope="module")
def clip_report(tmp_path_factory):
    """tiny-clip (vision-only, 2x2 grid) calibrated through the CLI on the built-in images."""
    out = tmp_path_factory.mktemp("clip") / "report"
    code = main(["calibrate", "--model", "tiny-clip", "--budgets", "0.1,0.5,1.0", "--out", str(out)])
    assert code == 0
    return out


def test_vision_only_calibration_runs_one_pass_per_image_and_says_weights_are_random(clip_report):
    report = json.loads((clip_report / "report.json").read_text())
    assert report["kind"] == "vision-encoder" and report["metric"] == "cosine"
    assert report["vision_passes"] == report["items"] == 4  # built-in set: 4 images, 3 budgets
    cosines = [r["metrics"]["cosine"]["mean"] for r in report["candidates"]]
    assert cosines[-1] == pytest.approx(1.0) and cosines[0] < cosines[-1]  # 100% is the unreduced model itself
    assert report["chosen"]["budget"] == min(r["budget"] for r in report["candidates"] if r["meets_target"])
    assert report["random_weights"] and "say nothing" in (clip_report / "report.md").read_text()


def test_export_budget_auto_bakes_the_choice_and_records_the_calibration(clip_report, tmp_path):
    from jsonschema import Draft202012Validator

    from edgetrim.runtime.manifest import SCHEMA_PATH

    report = json.loads((clip_report / "report.json").read_text())
    out = tmp_path / "artifact"
    args = ["export", "--target", "onnx", "--model", "tiny-clip", "--budget", "auto", "--calibration"]
    assert main([*args, str(clip_report), "--out", str(out), "--no-validate"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    record, chosen = manifest["calibration"], report["chosen"]
    assert (record["budget"], record["alpha"], record["achieved"]) == (chosen["budget"], 0.5, chosen["achieved"])
    assert record["calibration_set"]["sha256"] == report["calibration"]["sha256"]
    assert (record["metric"], record["target"], record["items"]) == ("cosine", 0.95, 4)
    assert manifest["reduction"]["tokens"] == chosen["tokens"]
    assert manifest["export_options"]["budget"] == str(chosen["budget"]) and manifest["export_options"]["alpha"] == 0.5
    assert list(Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).iter_errors(manifest)) == []


def test_export_refuses_a_report_that_does_not_apply(clip_report, tmp_path, capsys):
    args = ["export", "--target", "onnx", "--budget", "auto", "--out", str(tmp_path / "o")]
    one_line(capsys, main([*args, "--model", "tiny-clip"]), 2, "--budget auto needs --calibration")
    one_line(capsys, main([*args, "--model", "tiny-clip", "--calibration", str(tmp_path)]), 2, "holds no report.json")
    report = ["--calibration", str(clip_report)]
    one_line(capsys, main([*args, "--model", "tiny-siglip", *report]), 2, "measured on tiny-clip", "not tiny-siglip")
    one_line(capsys, main([*args, "--model", "tiny-clip", "--grid", "1x1", *report]), 2, "grid 2x2")
    one_line(capsys, main([*args, "--model", "tiny-clip", "--alpha", "0.3", *report]), 2, "drop --alpha")
    numbered = ["export", "--target", "onnx", "--model", "tiny-clip", "--budget", "0.2", *report]
    one_line(capsys, main([*numbered, "--out", str(tmp_path / "o")]), 2, "--calibration goes with --budget auto")
    missed = tmp_path / "missed"
    code = main(
        ["calibrate", "--model", "tiny-clip", "--budgets", "0.1", "--target-fidelity", "1", "--out", str(missed)]
    )
    assert code == 0 and json.loads((missed / "report.json").read_text())["chosen"] is None
    one_line(capsys, main([*args, "--model", "tiny-clip", "--calibration", str(missed)]), 2, "no budget met cosine")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "hints"),
    [
        (["--target-fidelity", "0"], ["--target-fidelity 0.0 is outside (0, 1]"]),
        (["--target-fidelity", "1.5"], ["--target-fidelity 1.5 is outside (0, 1]"]),
        (["--budgets", "0.1,1.2"], ["--budgets 1.2 is outside (0, 1]"]),
        (["--budgets", "0:0.5:0.1"], ["--budgets 0.0 is outside (0, 1]"]),
        (["--budgets", "half"], ["--budgets 'half' is not a list of fractions"]),
        (["--alphas", "1.5"], ["--alphas 1.5 is outside [0, 1]"]),
        (["--metric", "first-token"], ["--metric first-token needs a language model", "vision-encoder"]),
        (["--metric", "kl"], ["--metric kl needs a language model"]),
        (["--model", "tiny-qwen2"], ["tiny-qwen2 is a language-model model: calibrate takes VLMs"]),
        (["--measure"], ["--measure applies to VLMs"]),
        (["--model", "tiny-vlm", "--metric", "bleu"], ["--metric 'bleu' is unknown"]),
    ],
)
def test_bad_calibrate_input_is_refused_in_one_line(args, hints, tmp_path, capsys):
    argv = ["calibrate", "--model", "tiny-clip", "--out", str(tmp_path / "report"), *args]
    one_line(capsys, main(argv), 2, *hints)
    assert not (tmp_path / "report").exists()


def test_calibration_folders_empty_or_unreadable(tmp_path, capsys):
    base = ["calibrate", "--model", "tiny-clip", "--budgets", "0.5,1.0", "--out", str(tmp_path / "report")]
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line(capsys, main([*base, "--calib-images", str(empty)]), 2, "holds no images")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    one_line(capsys, main([*base, "--calib-images", str(broken)]), 2, "none of its 1 images can be read")
    sample_images(1)[0].save(broken / "b.png")
    assert main([*base, "--calib-images", str(broken)]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["items"] == report["vision_passes"] == 1 and len(report["calibration"]["skipped"]) == 1
    assert "1 unreadable skipped" in (tmp_path / "report" / "report.md").read_text()
