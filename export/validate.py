"""One validator: named pipelines of an artifact, run through the runtime, against the PyTorch reference.

A ``Check`` names a pipeline (and function) of the artifact and its cases, each inputs plus what the
reference gives. Every expected output is compared by kind: shape first (``ShapeMismatch``), float
outputs within a tolerance (``ToleranceExceeded``), integer outputs exactly (``IntegerMismatch``).
``chunkwise`` checks feed every chunk the reference's own inputs (no accumulated error on deep
pipelines); ``generate`` checks run greedy decoding through the runtime's language-model runner.
The ``fidelity`` mode holds an int8 artifact to gates instead of parity (``FidelityBelowGate``).
CoreML: the saved spec of every chunk, every function of a multifunction package included, against
the manifest (``SpecMismatch``); numbers only where Core ML runs (macOS).
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgetrim.runtime import contract
from edgetrim.runtime.chunks import ChunkLoader, ChunkLoadError, open_chunk
from edgetrim.runtime.errors import EdgetrimBug, NamesParameters
from edgetrim.runtime.manifest import Artifact, read_manifest

FORBIDDEN_COREML_OPS = ("argsort", "sort")


class ValidationFailed(NamesParameters):
    """The artifact does not match its reference; the message says where and how (exit 1)."""


class ShapeMismatch(ValidationFailed):
    pass


class ToleranceExceeded(ValidationFailed):
    pass


class IntegerMismatch(ValidationFailed):
    pass


class FidelityBelowGate(ValidationFailed):
    pass


class SpecMismatch(ValidationFailed):
    pass


@dataclass(frozen=True)
class Fidelity:
    """Gates of an int8 vision encoder against the fp32 reference (``tokens`` / ``positions`` outputs)."""

    min_overlap: float = 0.9  # share of the K kept positions in common with fp32
    min_cosine: float = 0.99  # cosine of every shared visual token
    fix: str = "export without `vision_int8`"


@dataclass
class Case:
    name: str
    feeds: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]  # outputs; for chunkwise checks every named tensor of the reference


@dataclass
class Check:
    pipeline: str
    cases: list[Case]
    function: str | None = None
    inputs: list[str] | None = None  # pipeline inputs when not the first chunk's alone
    chunkwise: bool = False
    generate: int = 0  # > 0: greedy tokens through LanguageModelRunner; feeds {inputs_embeds: [n, D]}
    relative: bool = False  # tolerance scaled by max(1, max |expected|) (logits)
    fidelity: Fidelity | None = None


@dataclass
class Validation:
    status: str  # passed | fidelity | spec-only | skipped
    max_abs_error: float | None
    atol: float
    cases: list[dict] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def compare(label: str, got: dict[str, np.ndarray], expected: dict[str, np.ndarray], tol: float) -> dict:
    """Every expected output: same shape; floats within ``tol``; integers equal. Raises on the first miss."""
    worst = 0.0
    for name, want in expected.items():
        have = np.asarray(got[name])
        if have.shape != want.shape:
            raise ShapeMismatch(f"{label}: {name} has shape {list(have.shape)}, the reference {list(want.shape)}")
        if np.issubdtype(want.dtype, np.floating):
            err = float(np.abs(have.astype(np.float64) - want).max()) if want.size else 0.0
            if not err <= tol:
                raise ToleranceExceeded(f"{label}: {name} differs by {err:.2e} (tolerance {tol:.2e})")
            worst = max(worst, err)
        elif not np.array_equal(have.astype(np.int64), want.astype(np.int64)):
            differ = int((have.astype(np.int64) != want.astype(np.int64)).sum())
            raise IntegerMismatch(f"{label}: {name} differs from the reference in {differ} of {want.size} entries")
    return {"case": label, "max_abs_error": worst, "tolerance": tol, "passed": True}


def fidelity_case(label: str, got: dict[str, np.ndarray], ref: dict[str, np.ndarray], gate: Fidelity) -> dict:
    """An int8 encoder's outputs vs the fp32 reference: K exact, share of kept positions in common, smallest
    cosine between the tokens of a shared position."""
    tokens, pos, ref_pos = got[contract.TOKENS], got[contract.POSITIONS][0], ref[contract.POSITIONS][0]
    k = ref_pos.size
    if tokens.shape != ref[contract.TOKENS].shape or pos.size != k:
        raise ShapeMismatch(f"{label}: {list(tokens.shape)} tokens, the reference {list(ref[contract.TOKENS].shape)}")
    common, i, j = np.intersect1d(pos.astype(np.int64), ref_pos, return_indices=True)
    a, b = tokens[0][i].astype(np.float64), ref[contract.TOKENS][0][j].astype(np.float64)
    cosine = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)
    case = {
        "case": label,
        "k_exact": bool(int(got[contract.PARTITION_BUDGETS].sum()) == k),
        "kept_overlap": len(common) / k,
        "min_token_cosine": float(cosine.min()) if len(common) else 0.0,
    }
    case["passed"] = bool(
        case["k_exact"] and case["kept_overlap"] >= gate.min_overlap and case["min_token_cosine"] >= gate.min_cosine
    )
    if not case["passed"]:
        raise FidelityBelowGate(
            f"{label}: {case['kept_overlap']:.0%} of kept positions shared with fp32 (needs {gate.min_overlap:.0%}), "
            f"min token cosine {case['min_token_cosine']:.4f} (needs {gate.min_cosine}), K exact: {case['k_exact']} "
            f"- {gate.fix}"
        )
    return case


def run_case(artifact: Artifact, check: Check, case: Case) -> list[tuple[str, dict, dict]]:
    """(label, got, expected) for one case, through the runtime."""
    tag = f"{check.pipeline}{':' + check.function if check.function else ''}/{case.name}"
    if check.generate:
        from edgetrim.runtime.llm import LanguageModelRunner

        runner = LanguageModelRunner(artifact)
        try:
            gen = runner.generate(case.feeds[contract.INPUTS_EMBEDS], check.generate)
        finally:
            runner.close()
        return [(tag, {contract.LOGITS: gen.first_logits, "token_ids": np.array(gen.tokens)}, case.expected)]
    if check.chunkwise:
        out = []
        for chunk in artifact.pipeline(check.pipeline):
            backend = open_chunk(artifact, chunk, check.function)
            got = backend.run({spec["name"]: case.expected[spec["name"]] for spec in chunk["inputs"]})
            want = {spec["name"]: case.expected[spec["name"]] for spec in chunk["outputs"]}
            function = f":{check.function}" if check.function and chunk.get("functions") else ""
            out.append((f"{chunk['name']}{function}/{case.name}", got, want))
        return out
    with ChunkLoader(artifact, pipeline=check.pipeline, inputs=check.inputs, outputs=list(case.expected)) as loader:
        return [(tag, loader.run(case.feeds, function=check.function), case.expected)]


def spec_check(artifact: Artifact) -> list[dict]:
    """Every CoreML chunk's saved spec: each function's I/O names and static shapes as the manifest lists,
    the functions a multifunction package holds as its ``functions`` entry names, no sort ops."""
    from edgetrim.export.targets.coreml import MAIN, spec_summary

    cases = []
    for chunk in artifact.chunks:
        path, _ = artifact.program(chunk)
        spec = spec_summary(path)
        wanted = {f["method"] for f in chunk["functions"].values()} if chunk.get("functions") else {MAIN}
        if set(spec["functions"]) != wanted:
            raise SpecMismatch(f"{chunk['name']}: functions {sorted(spec['functions'])}, expected {sorted(wanted)}")
        want_in = [(i["name"], i["shape"]) for i in chunk["inputs"]]
        want_out = [(o["name"], o["shape"]) for o in chunk["outputs"]]
        for name, io in spec["functions"].items():
            got_in = [(i["name"], i["shape"]) for i in io["inputs"]]
            got_out = [(o["name"], o["shape"]) for o in io["outputs"]]
            if got_in != want_in or got_out != want_out:
                raise SpecMismatch(
                    f"{chunk['name']}:{name}: I/O {got_in} -> {got_out}, expected {want_in} -> {want_out}"
                )
        forbidden = sorted(op for op in spec["ops"] if op in FORBIDDEN_COREML_OPS)
        if forbidden:
            raise SpecMismatch(f"{chunk['name']}: uses {forbidden}")
        cases.append({"case": f"spec:{chunk['name']}", "functions": sorted(spec["functions"]), "passed": True})
    return cases


def coreml_runs_here() -> bool:
    return platform.system() == "Darwin"


def validate(root: Path, checks: list[Check], atol: float) -> Validation:
    """Run every check on the staged artifact; raise the first typed failure, else the passed record."""
    artifact = read_manifest(root)
    cases: list[dict] = []
    if artifact.target == contract.COREML:
        cases += spec_check(artifact)
        if not coreml_runs_here():
            note = (
                "CoreML prediction needs macOS: spec checked (every function's names, static shapes, ops); "
                "numeric parity not run on this machine"
            )
            return Validation("spec-only", None, atol, cases, note)
    fidelity = False
    for check in checks:
        for case in check.cases:
            try:
                results = run_case(artifact, check, case)
            except ChunkLoadError as exc:  # a freshly written chunk that does not load is ours to fix
                raise EdgetrimBug(f"the exported {artifact.target} artifact does not load: {exc}") from exc
            for label, got, want in results:
                if check.fidelity:
                    cases.append(fidelity_case(label, got, want, check.fidelity))
                    fidelity = True
                    continue
                floats = [float(np.abs(v).max()) for v in want.values() if np.issubdtype(v.dtype, np.floating)]
                scale = max(1.0, *floats) if check.relative else 1.0
                cases.append(compare(label, got, want, atol * scale))
    errors = [c["max_abs_error"] for c in cases if "max_abs_error" in c]
    if fidelity:
        gated = [c for c in cases if "kept_overlap" in c]
        note = (
            f"int8 vs fp32 PyTorch over {len(gated)} inputs: >= {min(c['kept_overlap'] for c in gated):.1%} of kept "
            f"positions shared, shared tokens' cosine >= {min(c['min_token_cosine'] for c in gated):.4f}, K exact"
        )
        return Validation("fidelity", max(errors, default=None), atol, cases, note)
    return Validation("passed", max(errors, default=0.0), atol, cases)
