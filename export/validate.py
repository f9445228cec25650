"""One validator: named pipelines of an artifact, run through the runtime, against the PyTorch reference.

A ``Check`` names a pipeline (and function) of the artifact and its cases, each inputs plus what the
reference gives. Every expected output is compared by kind: shape first (``ShapeMismatch``), float
outputs within a tolerance (``ToleranceExceeded``), integer outputs exactly (``IntegerMismatch``).
``chunkwise`` checks feed every chunk the reference's own inputs (no accumulated error on deep
pipelines); ``generate`` checks run greedy decoding through the runtime's language-model runner.
The ``fidelity`` mode holds a quantized artifact to gates instead of parity (``FidelityBelowGate``, the
user's to fix: exit 2): vision (K exact, kept positions shared, token cosine) and language model
(first-token top-1 agreement, first-token logit cosine, greedy agreement), on calibration inputs.
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


GATE_FIX = "export with a milder `quantize` (int8 or none) or lower the gate"


@dataclass(frozen=True)
class Fidelity:
    """Gates of a quantized vision encoder against the float reference (``tokens`` / ``positions``)."""

    min_overlap: float = 0.9  # `gate_overlap`: share of the K kept positions in common with the float model
    min_cosine: float = 0.99  # `gate_token_cosine`: cosine of every shared visual token


@dataclass(frozen=True)
class LanguageFidelity:
    """Gates of a quantized language model against the float reference over calibration cases. With
    random (preset) weights ``gated`` is False: untrained weights have none of the redundancy that lets a
    trained model absorb int4 rounding, and their near-uniform logits make argmax agreement noise, so the
    figures say nothing about a real model: they are reported, not gated, and the report says so."""

    min_top1: float = 0.9  # `gate_top1`: share of cases whose first token is the float model's
    min_logit_cosine: float = 0.99  # `gate_logit_cosine`: first-token logits, every case
    min_greedy: float = 0.75  # `gate_greedy`: mean share of the greedy tokens equal, up to the first miss
    gated: bool = True


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
    fidelity: Fidelity | LanguageFidelity | None = None


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
            f"- {GATE_FIX} (`gate_overlap`, `gate_token_cosine`)"
        )
    return case


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def language_fidelity_case(label: str, got: dict[str, np.ndarray], ref: dict[str, np.ndarray], gate: LanguageFidelity):
    """A quantized language model's first logits and greedy tokens vs the float reference's. The logit
    cosine is gated per case; top-1 and greedy agreement over all cases (``language_fidelity_gate``)."""
    logits, want = got[contract.LOGITS].ravel(), ref[contract.LOGITS].ravel()
    tokens, want_tokens = list(got["token_ids"]), list(ref["token_ids"])
    same = next((i for i, (a, b) in enumerate(zip(tokens, want_tokens, strict=False)) if a != b), len(want_tokens))
    case = {
        "case": label,
        "top1_agrees": bool(int(logits.argmax()) == int(want.argmax())),
        "logit_cosine": cosine(logits, want),
        "greedy_agreement": same / max(len(want_tokens), 1),
    }
    case["passed"] = case["logit_cosine"] >= gate.min_logit_cosine
    if gate.gated and not case["passed"]:
        raise FidelityBelowGate(
            f"{label}: first-token logit cosine {case['logit_cosine']:.4f} is below `gate_logit_cosine` "
            f"{gate.min_logit_cosine} - {GATE_FIX}"
        )
    return case


def language_fidelity_gate(cases: list[dict], gate: LanguageFidelity) -> dict:
    """Top-1 and greedy agreement over every case; refused below the gate (when gated)."""
    top1 = sum(c["top1_agrees"] for c in cases) / len(cases)
    greedy = sum(c["greedy_agreement"] for c in cases) / len(cases)
    if gate.gated:
        for name, value, floor in (("gate_top1", top1, gate.min_top1), ("gate_greedy", greedy, gate.min_greedy)):
            if value < floor:
                what = "first-token top-1 agreement" if name == "gate_top1" else "greedy agreement"
                raise FidelityBelowGate(
                    f"language model: {what} {value:.2f} over {len(cases)} calibration cases is below `{name}` "
                    f"{floor} - {GATE_FIX}"
                )
    return {"top1_agreement": top1, "greedy_agreement": greedy, "gated": gate.gated}


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
        if chunk.get("quantization") and not spec["quantization_ops"]:
            mark = chunk["quantization"]
            raise SpecMismatch(f"{chunk['name']}: marked {mark} but its spec holds no quantized weights")
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
            quantized = any(c.get("quantization") for c in artifact.chunks)
            note = (
                "CoreML prediction needs macOS: spec checked (every function's names, static shapes, ops"
                + ("; quantized weights present" if quantized else "")
                + "); numeric "
                + ("fidelity gates" if quantized else "parity")
                + " not run on this machine"
            )
            return Validation("spec-only", None, atol, cases, note)
    notes: list[str] = []
    for check in checks:
        checked = []
        for case in check.cases:
            try:
                results = run_case(artifact, check, case)
            except ChunkLoadError as exc:  # a freshly written chunk that does not load is ours to fix
                raise EdgetrimBug(f"the exported {artifact.target} artifact does not load: {exc}") from exc
            for label, got, want in results:
                if isinstance(check.fidelity, Fidelity):
                    checked.append(fidelity_case(label, got, want, check.fidelity))
                elif isinstance(check.fidelity, LanguageFidelity):
                    checked.append(language_fidelity_case(label, got, want, check.fidelity))
                else:
                    floats = [float(np.abs(v).max()) for v in want.values() if np.issubdtype(v.dtype, np.floating)]
                    scale = max(1.0, *floats) if check.relative else 1.0
                    checked.append(compare(label, got, want, atol * scale))
        cases += checked
        if isinstance(check.fidelity, Fidelity):
            notes.append(
                f"vision over {len(checked)} inputs: >= {min(c['kept_overlap'] for c in checked):.1%} of kept "
                f"positions shared with the float model, shared tokens' cosine >= "
                f"{min(c['min_token_cosine'] for c in checked):.4f}, K exact"
            )
        elif isinstance(check.fidelity, LanguageFidelity):
            agreement = language_fidelity_gate(checked, check.fidelity)
            cases.append({"case": f"{check.pipeline}/agreement", **agreement, "passed": True})
            notes.append(
                f"language model over {len(checked)} cases: first-token logit cosine >= "
                f"{min(c['logit_cosine'] for c in checked):.4f}, top-1 agreement {agreement['top1_agreement']:.0%}, "
                f"greedy agreement {agreement['greedy_agreement']:.0%}"
                + ("" if check.fidelity.gated else " (random weights: reported, not gated - they say nothing of a "
                   "trained model)")
            )
    errors = [c["max_abs_error"] for c in cases if "max_abs_error" in c]
    if notes:
        return Validation("fidelity", max(errors, default=None), atol, cases, "; ".join(notes))
    return Validation("passed", max(errors, default=0.0), atol, cases)
