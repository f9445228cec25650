"""One validator: named pipelines of an artifact, run through the runtime, against the PyTorch reference.

A ``Check`` names a pipeline (and function) of the artifact and its cases, each inputs plus what the
reference gives. Every expected output is compared by kind: shape first (``ShapeMismatch``), float
outputs within a tolerance (``ToleranceExceeded``), integer outputs exactly (``IntegerMismatch``).
``chunkwise`` checks feed every chunk the reference's own inputs (no accumulated error on deep
pipelines); ``generate`` checks run greedy decoding through the runtime's language-model runner.
The ``fidelity`` mode holds a quantized artifact to gates instead of parity (``FidelityBelowGate``, the
user's to fix: exit 2): vision (K exact, kept positions shared, token cosine), language model
(first-token top-1 agreement, first-token logit cosine, greedy agreement), video denoiser (velocity
cosine per sampling step and CFG half, run as the sampler runs it) and text encoder (caption embedding
cosine per token), on calibration inputs.
CoreML: the saved spec of every chunk, every function of a multifunction package included, against
the manifest (``SpecMismatch``); numbers only where Core ML runs (macOS).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
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
GUIDED = "guided_velocity"  # velocity checks: v_u + g (v_c - v_u) [C_in, T, H, W], beside the CFG batch's


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


@dataclass(frozen=True)
class VelocityFidelity:
    """Gate of a quantized video denoiser against the float model: at each gated sampling step, the cosine
    of the velocity (first C_in channels) the artifact gives for each half of the CFG batch (caption
    pipeline, then the denoiser pipeline, as the sampler runs it) to the float PyTorch model's on the same
    latent, timestep and captions; the smaller of the two is gated. Reported beside it: the cosine of the
    guided velocity ``v_u + g (v_c - v_u)`` the sampler integrates, and how far the caption moves the float
    velocity, ``|v_c - v_u| / |v_u|`` (when that is small, g amplifies rounding noise in a small difference
    and the guided cosine drops for that reason). ``note``: what the report adds (e.g. random weights)."""

    min_cosine: float = 0.99  # `gate_velocity_cosine`: both CFG halves, every gated step, both functions
    note: str = ""


@dataclass(frozen=True)
class CaptionFidelity:
    """Gate of a quantized text encoder against the float model: the cosine of every position's caption
    embedding (padding included: the runtime returns all L) on each calibration prompt. ``note`` as above."""

    min_cosine: float = 0.99  # `gate_caption_cosine`: every position of every prompt
    note: str = ""


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
    fidelity: Fidelity | LanguageFidelity | VelocityFidelity | CaptionFidelity | None = None
    # a kind's own host loop through the runtime (artifact, feeds) -> outputs, e.g. a video decode; None: a pipeline
    runner: Callable[[Artifact, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None


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


def velocity_case(label: str, got: dict[str, np.ndarray], ref: dict[str, np.ndarray], gate: VelocityFidelity) -> dict:
    """A quantized video denoiser's CFG-batch velocities [2, C_in, T, H, W] (conditional, unconditional) and
    guided velocity vs the float reference's: ``velocity_cosine`` (the smaller half, gated),
    ``guided_cosine`` and ``caption_effect`` (|v_c - v_u| / |v_u| of the float model)."""
    have, want = got[contract.VELOCITY], ref[contract.VELOCITY]
    if have.shape != want.shape:
        raise ShapeMismatch(f"{label}: velocity has shape {list(have.shape)}, the reference {list(want.shape)}")
    value = min(cosine(have[0], want[0]), cosine(have[1], want[1]))
    if value < gate.min_cosine:
        raise FidelityBelowGate(
            f"{label}: velocity cosine {value:.4f} is below `gate_velocity_cosine` {gate.min_cosine} - {GATE_FIX}"
        )
    effect = np.linalg.norm(want[0] - want[1].astype(np.float64)) / max(np.linalg.norm(want[1]), 1e-30)
    return {
        "case": label,
        "velocity_cosine": value,
        "guided_cosine": cosine(got[GUIDED], ref[GUIDED]),
        "caption_effect": float(effect),
        "passed": True,
    }


def caption_case(label: str, got: dict[str, np.ndarray], ref: dict[str, np.ndarray], gate: CaptionFidelity) -> dict:
    """A quantized text encoder's caption embeddings [1, L, D] vs the float reference's: ``caption_cosine``,
    the smallest cosine over the L positions (gated)."""
    have, want = got[contract.CAPTION_EMBEDS], ref[contract.CAPTION_EMBEDS]
    if have.shape != want.shape:
        raise ShapeMismatch(f"{label}: caption embeddings {list(have.shape)}, the reference {list(want.shape)}")
    a, b = (x.astype(np.float64).reshape(-1, x.shape[-1]) for x in (have, want))
    rows = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)
    value = float(rows.min())
    if value < gate.min_cosine:
        raise FidelityBelowGate(
            f"{label}: caption cosine {value:.4f} is below `gate_caption_cosine` {gate.min_cosine} - {GATE_FIX}"
        )
    return {"case": label, "caption_cosine": value, "passed": True}


def cfg_velocities(artifact: Artifact, check: Check) -> Iterator[tuple[str, dict, dict]]:
    """(label, got, expected) for every case of a velocity check, run as ``runtime.video`` samples: the
    caption pipeline on the conditional and null captions, the denoiser pipeline (``check.function``) on
    the CFG batch (in two calls when the export batch is 1). Feeds: latent [C_in, T, H, W], timestep [1],
    caption_embeds [2, L, C_cap] (conditional, null), caption_mask [L] (both halves). Outputs: velocity
    [2, C_in, T, H, W] (conditional, unconditional) and ``GUIDED`` v_u + g (v_c - v_u), g the artifact's."""
    from edgetrim.runtime.video import DENOISER_INPUTS

    video = artifact.manifest["video"]
    batch, c_in, g = video["batch"], video["in_channels"], np.float32(video["scheduler"]["cfg_scale"])
    with (
        ChunkLoader(artifact, pipeline=contract.CAPTION) as captioner,
        ChunkLoader(artifact, pipeline=contract.DENOISER, inputs=DENOISER_INPUTS) as loader,
    ):
        for case in check.cases:
            f, halves = case.feeds, []
            for i in range(0, 2, batch):
                caption = captioner.run({contract.CAPTION_EMBEDS: f[contract.CAPTION_EMBEDS][i : i + batch]})
                feeds = {
                    contract.LATENT: np.repeat(f[contract.LATENT][None], batch, axis=0),
                    contract.TIMESTEP: np.repeat(f[contract.TIMESTEP], batch),
                    contract.CAPTION_TOKENS: caption[contract.CAPTION_TOKENS],
                    contract.CAPTION_MASK: np.repeat(f[contract.CAPTION_MASK][None], batch, axis=0),
                }
                halves.append(loader.run(feeds, function=check.function)[contract.VELOCITY][:, :c_in])
            v = np.concatenate(halves)
            got = {contract.VELOCITY: v, GUIDED: v[1] + g * (v[0] - v[1])}
            yield f"{check.pipeline}:{check.function}/{case.name}", got, case.expected


def run_check(artifact: Artifact, check: Check) -> Iterator[tuple[str, dict, dict]]:
    """(label, got, expected) for every case of ``check``; a freshly written chunk that does not load is
    edgetrim's bug."""
    try:
        if isinstance(check.fidelity, VelocityFidelity):
            yield from cfg_velocities(artifact, check)
        else:
            for case in check.cases:
                yield from run_case(artifact, check, case)
    except ChunkLoadError as exc:
        raise EdgetrimBug(f"the exported {artifact.target} artifact does not load: {exc}") from exc


def run_case(artifact: Artifact, check: Check, case: Case) -> list[tuple[str, dict, dict]]:
    """(label, got, expected) for one case, through the runtime."""
    tag = f"{check.pipeline}{':' + check.function if check.function else ''}/{case.name}"
    if check.runner is not None:
        return [(tag, check.runner(artifact, case.feeds), case.expected)]
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
            inputs, outputs = artifact.io(chunk, check.function)
            got = backend.run({spec["name"]: case.expected[spec["name"]] for spec in inputs})
            want = {spec["name"]: case.expected[spec["name"]] for spec in outputs}
            function = f":{check.function}" if check.function and chunk.get("functions") else ""
            out.append((f"{chunk['name']}{function}/{case.name}", got, want))
        return out
    with ChunkLoader(artifact, pipeline=check.pipeline, inputs=check.inputs, outputs=list(case.expected)) as loader:
        return [(tag, loader.run(case.feeds, function=check.function), case.expected)]


def spec_check(artifact: Artifact) -> list[dict]:
    """Every CoreML package's saved spec: the functions it holds as the chunk's ``functions`` entries name
    them, each function's I/O names and static shapes and its states as the manifest lists, no sort ops,
    quantized weights where the chunk is marked quantized."""
    from edgetrim.export.targets.coreml import MAIN, spec_summary

    cases = []
    for chunk in artifact.chunks:
        packages: dict[str, dict[str, str | None]] = {}  # file -> {Core ML function: chunk function}
        for function in chunk.get("functions") or [None]:
            path, method = artifact.program(chunk, function)
            method = MAIN if method == contract.DEFAULT_METHOD else method
            packages.setdefault(path.relative_to(artifact.root).as_posix(), {})[method] = function
        want_states = [(s["name"], s["shape"]) for s in chunk.get("states", [])]
        for file, functions in packages.items():
            spec = spec_summary(artifact.root / file)
            if set(spec["functions"]) != set(functions):
                raise SpecMismatch(f"{file}: functions {sorted(spec['functions'])}, expected {sorted(functions)}")
            for name, io in spec["functions"].items():
                got_states = [(s["name"], s["shape"]) for s in io["states"]]
                if got_states != want_states:
                    raise SpecMismatch(f"{chunk['name']}:{name}: states {got_states}, expected {want_states}")
                inputs, outputs = artifact.io(chunk, functions[name])
                want_in = [(i["name"], i["shape"]) for i in inputs]
                want_out = [(o["name"], o["shape"]) for o in outputs]
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
            label = chunk["name"] if len(packages) == 1 else f"{chunk['name']}.{next(iter(functions.values()))}"
            case = {"case": f"spec:{label}", "functions": sorted(spec["functions"]), "passed": True}
            cases.append(case | ({"states": [s for s, _ in want_states]} if want_states else {}))
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
        for label, got, want in run_check(artifact, check):
            if isinstance(check.fidelity, Fidelity):
                checked.append(fidelity_case(label, got, want, check.fidelity))
            elif isinstance(check.fidelity, LanguageFidelity):
                checked.append(language_fidelity_case(label, got, want, check.fidelity))
            elif isinstance(check.fidelity, VelocityFidelity):
                checked.append(velocity_case(label, got, want, check.fidelity))
            elif isinstance(check.fidelity, CaptionFidelity):
                checked.append(caption_case(label, got, want, check.fidelity))
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
        elif isinstance(check.fidelity, VelocityFidelity):
            effects = [c["caption_effect"] for c in checked]
            notes.append(
                f"denoiser ({check.function}) over {len(checked)} sampling steps: velocity cosine >= "
                f"{min(c['velocity_cosine'] for c in checked):.4f} (both CFG halves; guided velocity cosine >= "
                f"{min(c['guided_cosine'] for c in checked):.4f}, the caption moving the float velocity by "
                f"{min(effects):.1%}-{max(effects):.1%})"
            )
        elif isinstance(check.fidelity, CaptionFidelity):
            notes.append(
                f"text encoder over {len(checked)} calibration prompts: caption cosine (every position) >= "
                f"{min(c['caption_cosine'] for c in checked):.4f}"
            )
    gates = [c.fidelity for c in checks if isinstance(c.fidelity, VelocityFidelity | CaptionFidelity)]
    notes += dict.fromkeys(g.note for g in gates if g.note)  # one remark per distinct note, in order
    errors = [c["max_abs_error"] for c in cases if "max_abs_error" in c]
    if notes:
        return Validation("fidelity", max(errors, default=None), atol, cases, "; ".join(notes))
    return Validation("passed", max(errors, default=0.0), atol, cases)
