"""The Python runtime (and exporter) against the conformance vectors in apps/conformance, the same files
the Swift and Java implementations pass."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetrim.runtime import contract
from edgetrim.runtime.chunks import MB, plan_memory
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.llm import load_tokenizer
from edgetrim.runtime.manifest import digest_path, open_artifact, read_manifest
from edgetrim.runtime.preprocess import preprocess, views
from edgetrim.runtime.sampler import LeapRule, sample, shift_ratio, timesteps
from edgetrim.runtime.vlm import detokenize, prompt_ids

VECTORS = Path(__file__).parents[1] / "apps" / "conformance"
REASONS = {  # refusal reason -> what Python's message says
    "missing": "is missing",
    "size": "the manifest says",
    "sha256": "sha256",
    "outside": "outside the artifact folder",
    "schema_version": "newer than this runtime",
    "manifest": "manifest",
}


def load(name: str):
    return json.loads((VECTORS / name).read_text())


def test_contract_names_are_the_runtimes():
    assert load("contract.json") == json.loads(json.dumps(contract.as_json()))


@pytest.mark.parametrize("name", ["vision-onnx", "vision-executorch", "vision-coreml"])
def test_artifacts_verify_and_match_what_the_exporter_writes_today(name, tmp_path):
    from edgetrim.export.build import export
    from edgetrim.export.options import ExportOptions

    root = VECTORS / "artifacts" / name
    artifact = open_artifact(root)
    for chunk in artifact.chunks:
        for entry in chunk["files"]:
            assert digest_path(root / entry["path"]) == (entry["bytes"], entry["sha256"])
    options = artifact.manifest["export_options"]
    fresh = tmp_path / name
    export(
        ExportOptions(out=fresh, validate=False, chunks=options["chunks"], target=options["target"], model="tiny-clip")
    )
    today = read_manifest(fresh).manifest

    def shape(m: dict) -> dict:
        return {
            "kind": m["kind"],
            "sections": {k: m[k] for k in ("reduction", "preprocessing", "outputs", "pipelines", "export_options")},
            "chunks": [
                {k: c[k] for k in ("name", "inputs", "outputs")} | {"roles": [f["role"] for f in c["files"]]}
                for c in m["chunks"]
            ],  # fmt: skip
        }

    assert shape(today) == shape(artifact.manifest)


@pytest.mark.parametrize(
    "name", ["vlm", "language-model", "language-model-coreml", "language-model-tied", "video-denoiser", "text-encoder"]
)
def test_manifests_of_every_kind_validate(name):
    from jsonschema import Draft202012Validator

    from edgetrim.runtime.manifest import SCHEMA_PATH

    manifest = load(f"manifests/{name}.json")
    assert name.startswith(manifest["kind"])
    assert list(Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).iter_errors(manifest)) == []


def test_the_coreml_language_model_keeps_its_kv_cache_as_state(tmp_path):
    """manifests/language-model-coreml.json: the layer chunks list their caches as states and no function passes past
    / present tensors; the other language models say io. Python's runtime leaves the stateful one to the iOS app."""
    from edgetrim.runtime.llm import LanguageModelRunner

    manifest = load("manifests/language-model-coreml.json")
    llm = manifest["llm"]
    assert (manifest["target"], llm["kv_cache"]) == (contract.COREML, contract.KV_STATE)
    shape = [1, llm["num_kv_heads"], llm["max_length"], llm["head_dim"]]
    layers = [c for c in manifest["chunks"] if "states" in c]
    assert [c["name"] for c in manifest["chunks"] if c not in layers] == ["lm_head"]
    states = [s for c in layers for s in c["states"]]
    caches = [n for layer in range(llm["num_layers"]) for n in contract.cache_names(layer)]
    assert states == [{"name": n, "shape": shape, "dtype": "float16"} for n in caches]
    functions = [f for c in manifest["chunks"] for f in c["functions"].values()]
    names = {t["name"] for f in functions for t in f["inputs"] + f["outputs"]}
    assert not [n for n in names if n.startswith(("past_", "present_"))]
    assert {f["file"] for c in layers for f in c["functions"].values()} == {c["files"][0]["path"] for c in layers}
    assert [load(f"manifests/{k}.json")["llm"]["kv_cache"] for k in ("vlm", "language-model")] == [contract.KV_IO] * 2
    (tmp_path / contract.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="KV cache as Core ML state"):
        LanguageModelRunner(read_manifest(tmp_path))


def mutate(root: Path, mutation: dict, outside: Path) -> None:
    op = mutation["op"]
    target = root / mutation.get("file", contract.MANIFEST)
    if op == "flip_byte":
        data = bytearray(target.read_bytes())
        data[mutation["offset"]] ^= 0xFF
        target.write_bytes(bytes(data))
    elif op == "truncate":
        target.write_bytes(target.read_bytes()[: mutation["bytes"]])
    elif op == "delete":
        target.unlink()
    elif op == "link_outside":
        shutil.move(target, outside)
        target.symlink_to(outside)
    elif op == "write":
        target.write_text(mutation["text"])
    elif op in ("set", "delete_key"):
        manifest = json.loads((root / contract.MANIFEST).read_text())
        node = manifest
        for key in mutation["path"][:-1]:
            node = node[key]
        if op == "set":
            node[mutation["path"][-1]] = mutation["value"]
        else:
            del node[mutation["path"][-1]]
        (root / contract.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("case", load("damaged.json"), ids=lambda c: c["name"])
def test_damaged_artifacts_get_the_same_verdict(case, tmp_path):
    root = tmp_path / "artifact"
    if "manifest" in case:  # a manifest of manifests/ alone (its files are not shipped)
        root.mkdir()
        shutil.copy(VECTORS / "manifests" / f"{case['manifest']}.json", root / contract.MANIFEST)
    else:
        shutil.copytree(VECTORS / "artifacts" / case["artifact"], root)
    mutate(root, case["mutation"], tmp_path / "moved-out")
    if case["verdict"] == "accepted":
        open_artifact(root)
        return
    with pytest.raises(UserError) as refused:
        open_artifact(root)
    assert REASONS[case["reason"]] in str(refused.value), str(refused.value)


@pytest.mark.parametrize("case", load("planner.json"), ids=lambda c: f"{len(c['chunk_bytes'])}@{c['budget_mb']}")
def test_memory_plans(case):
    chunks = [{"name": f"c{i}", "files": [{"bytes": b}]} for i, b in enumerate(case["chunk_bytes"])]
    want = case["expected"]
    if want.get("refused"):
        with pytest.raises(UserError, match=f"at least {want['minimum_mb']}"):
            plan_memory(chunks, case["budget_mb"], case["overlap"])
        return
    plan = plan_memory(chunks, case["budget_mb"], case["overlap"])
    assert (list(plan.resident), list(plan.streamed), plan.overlap) == (
        want["resident"],
        want["streamed"],
        want["overlap"],
    )
    assert MB == 1048576


@pytest.mark.parametrize("case", load("preprocess.json"), ids=lambda c: c["name"])
def test_preprocessing(case):
    rgb = np.frombuffer((VECTORS / case["input"]).read_bytes(), np.uint8).reshape(case["height"], case["width"], 3)
    image, grid = Image.fromarray(rgb), tuple(case["grid"])
    got = preprocess(image, case["image_size"], grid, case["mean"], case["std"])
    want = np.frombuffer((VECTORS / case["expected"]).read_bytes(), "<f4").reshape(case["shape"])
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    pixels = np.stack([np.asarray(v) for v in views(image, case["image_size"], grid)])
    assert pixels.tobytes() == (VECTORS / case["views"]).read_bytes()


def test_tokenizer():
    tok = load_tokenizer(VECTORS / "tokenizer")
    cases = load("tokenizer/cases.json")
    for case in cases["encode"]:
        assert tok.encode(case["text"]).ids == case["ids"], case["text"]
    for case in cases["decode"]:
        assert detokenize(tok, case["ids"]) == case["text"]
    for case in cases["prompts"]:
        assert prompt_ids(tok, case["template"], case["prompt"], case["image_token_id"]) == case["ids"]


@pytest.mark.parametrize("case", load("sampler.json"), ids=lambda c: c["name"])
def test_sampler(case):
    assert shift_ratio(*case["pixels"]) == pytest.approx(case["shift_ratio"], rel=1e-12)
    schedule = timesteps(case["steps"], case["shift_ratio"])
    np.testing.assert_allclose(schedule, case["schedule"], rtol=1e-12)
    table = np.asarray(case["velocities"], np.float32).reshape(-1, *case["shape"])
    calls = []

    def velocity(z, t, function):
        calls.append(function)
        return table[len(calls) - 1]

    noise = np.asarray(case["noise"], np.float32).reshape(case["shape"])
    rule = LeapRule(**case["lpl"]) if case.get("lpl") else None
    result = sample(velocity, noise, schedule, case["merge_steps"], case["leap_at"], rule)
    want = case["expected"]
    assert (result.steps_run, result.leap_step, result.functions) == (
        want["steps_run"],
        want["leap_step"],
        want["functions"],
    )
    np.testing.assert_allclose(result.latent.ravel(), want["latent"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(result.similarities, want["similarities"], atol=1e-9)


def test_overlay_mapping():
    from edgetrim.runtime.overlay import kept_cells

    for case in load("overlay.json"):
        cells = kept_cells(np.asarray(case["positions"]), case["side"])
        assert [list(c) for c in cells] == case["cells"]
        assert np.bincount([c[0] for c in cells], minlength=case["partitions"]).tolist() == case["kept"]


def test_data_files():
    for case in load("npy.json"):
        array = np.load(VECTORS / case["file"])
        assert list(array.shape) == case["shape"]
        np.testing.assert_array_equal(array.astype(float).ravel(), case["values"])


def test_int8_embedding_rows():
    """embedding.json: the exporter's quantization of ``source`` is the stored table and scales; the runtime's
    rows of ``ids`` are q * scale exactly, within half a step (scale / 2) of the float rows."""
    from edgetrim.runtime.embedding import EmbeddingTable, quantize_rows

    case = load("embedding.json")
    values, scales = np.load(VECTORS / case["table"]), np.load(VECTORS / case["scales"])
    assert (values.dtype, scales.dtype, list(values.shape)) == (np.int8, np.float32, case["shape"])
    assert values.ravel().tolist() == case["values"] and scales.tolist() == case["scale_values"]
    source = np.asarray(case["source"], np.float32).reshape(case["shape"])
    for mine, stored in zip(quantize_rows(source), (values, scales), strict=True):
        np.testing.assert_array_equal(mine, stored)
    rows = EmbeddingTable(values, scales).rows(case["ids"])
    np.testing.assert_array_equal(rows, np.asarray(case["rows"], np.float32))
    step = scales[case["ids"]][:, None]
    assert np.all(np.abs(rows - source[case["ids"]]) <= step / 2 * (1 + 1e-6))


def test_int8_block_embedding_rows():
    """embedding_block.json: the exporter's block quantization of ``source`` (q + 128 in uint8, a scale per
    block) is the stored table and scales; the rows of ``ids`` are (u - 128) * scale exactly, within half a
    step of the float rows; the tied manifest names its head chunk."""
    from edgetrim.runtime.embedding import EmbeddingTable, quantize_blocks

    case = load("embedding_block.json")
    values, scales = np.load(VECTORS / case["table"]), np.load(VECTORS / case["scales"])
    assert (values.dtype, scales.dtype) == (np.uint8, np.float32)
    assert (list(values.shape), list(scales.shape)) == (case["shape"], case["scales_shape"])
    assert values.ravel().tolist() == case["values"] and scales.ravel().tolist() == case["scale_values"]
    assert case["zero_point"] == contract.EMBEDDING_ZERO_POINT and case["shape"][1] // case["block"] == scales.shape[1]
    source = np.asarray(case["source"], np.float32).reshape(case["shape"])
    for mine, stored in zip(quantize_blocks(source, case["block"]), (values, scales), strict=True):
        np.testing.assert_array_equal(mine, stored)
    rows = EmbeddingTable(values, scales).rows(case["ids"])
    np.testing.assert_array_equal(rows, np.asarray(case["rows"], np.float32))
    step = np.repeat(scales[case["ids"]], case["block"], axis=1)
    assert np.all(np.abs(rows - source[case["ids"]]) <= step / 2 * (1 + 1e-6))
    llm = load("manifests/language-model-tied.json")["llm"]
    assert (llm["embedding_dtype"], llm["embedding_tied"]) == (contract.EMBEDDING_INT8_BLOCK, "lm_head")


KIT = Path(__file__).parents[1] / "apps" / "ios" / "EdgetrimKit"


@pytest.fixture(scope="module")
def edgetrim_kit() -> Path:
    """The Swift command line, built from apps/ios/EdgetrimKit (a Swift 6 toolchain is required)."""
    swift = shutil.which("swift") or "/opt/swift/usr/bin/swift"
    if not Path(swift).exists():
        pytest.fail("no Swift toolchain (swift on PATH or /opt/swift): install Swift 6 to test apps/ios")
    proc = subprocess.run([swift, "build", "--product", "edgetrim-kit"], cwd=KIT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return KIT / ".build" / "debug" / "edgetrim-kit"


@pytest.mark.parametrize("fixture", ["tiny_onnx", "tiny_executorch", "tiny_coreml"])
def test_swift_verifies_what_this_run_exported(fixture, request, edgetrim_kit, tmp_path):
    """Swift's SHA-256 and manifest reading on artifacts exported in this test run; a damaged copy refused alike."""
    root = request.getfixturevalue(fixture)
    manifest = read_manifest(root).manifest
    proc = subprocess.run([edgetrim_kit, "verify", root], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"kind       {manifest['kind']}" in proc.stdout and f"target     {manifest['target']}" in proc.stdout
    assert all(chunk["name"] in proc.stdout for chunk in manifest["chunks"])
    budget = sum(f["bytes"] for c in manifest["chunks"] for f in c["files"]) / MB / 2
    plan = subprocess.run([edgetrim_kit, "plan", root, "--budget", str(budget)], capture_output=True, text=True)
    try:
        python_plan = plan_memory(read_manifest(root).pipeline(), budget)
    except UserError as exc:  # one chunk larger than half the artifact: both refuse, naming the same minimum
        minimum = str(exc).split("at least ")[1]
        assert plan.returncode == 2 and f"at least {minimum}" in plan.stderr, (plan.stderr, str(exc))
    else:
        assert plan.returncode == 0, plan.stderr
        assert plan.stdout.count("  streamed  ") == len(python_plan.streamed)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    program = copy / manifest["chunks"][0]["files"][0]["path"]
    target = next(p for p in sorted(program.rglob("*")) if p.is_file()) if program.is_dir() else program
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    refused = subprocess.run([edgetrim_kit, "verify", copy], capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.startswith("error:") and "sha256" in refused.stderr
    with pytest.raises(UserError, match="sha256"):
        open_artifact(copy)
