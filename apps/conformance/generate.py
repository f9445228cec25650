"""Write the conformance vectors: the artifact contract as data that every implementation must pass.

    python apps/conformance/generate.py [OUT]      (default: this folder; needs edgetrim[export])

Tiny artifacts exported by the exporter (ONNX, ExecuTorch, CoreML), the manifests of every kind,
damaged-artifact mutations with their verdicts, memory-planner cases, AnyRes preprocessing (RGB8 in,
float32 out), tokenizer cases, sampler trajectories, the kept-token mapping and the int8 embedding
tables (per row; per block, shared with a tied LM head). The format is in README.md beside this file.
Python's runtime (tests/test_conformance.py), EdgetrimKit (Swift) and the Android core (Java) consume the
same files.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from edgetrim.cli.main import quiet_toolchains
from edgetrim.export.build import export
from edgetrim.export.families.decoder import CHATML, build_byte_tokenizer
from edgetrim.export.options import ExportOptions
from edgetrim.runtime import contract
from edgetrim.runtime.chunks import MB, plan_memory
from edgetrim.runtime.embedding import EmbeddingTable, quantize_blocks, quantize_rows
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.llm import load_tokenizer
from edgetrim.runtime.preprocess import preprocess, views
from edgetrim.runtime.sampler import LeapRule, sample, shift_ratio, timesteps
from edgetrim.runtime.vlm import detokenize, prompt_ids

HERE = Path(__file__).parent
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
ARTIFACTS = {  # name -> export options: the tiny vision encoder on every target, chunked on ONNX
    "vision-onnx": dict(target="onnx", model="tiny-clip", chunks=3),
    "vision-executorch": dict(target="executorch", model="tiny-clip"),
    "vision-coreml": dict(target="coreml", model="tiny-clip"),
}
MANIFESTS = {  # manifests/<name>.json, decoded (their files are not shipped): one per kind, and a stateful Core ML LM
    "vlm": dict(target="onnx", model="tiny-vlm", llm_chunks=2, validate=False),
    "language-model": dict(target="executorch", model="tiny-qwen2", validate=False),
    # the KV cache as Core ML model state (the coreml default); one prefill length keeps the export short
    "language-model-coreml": dict(target="coreml", model="tiny-qwen2", prefill_buckets="none", validate=False),
    # quantized ONNX, the head tied to the table: int8_block, llm.embedding_tied
    "language-model-tied": dict(
        target="onnx", model="tiny-qwen2", quantize="int8", prefill_buckets="none", validate=False
    ),
    "video-denoiser": dict(target="coreml", model="stdit3-tiny", validate=False),
    "text-encoder": dict(target="onnx", model="t5-tiny", validate=False),
}
STRINGS = [
    "Describe the image in one sentence.",
    "What is written on the sign in the picture?",
    "héllo wörld, ça va?",
    "日本語のテキストと漢字",
    "emoji 🙂👍🏽 and a flag 🇫🇷",
    "  multiple   spaces\n\nnewlines\t tabs ",
    "<|im_start|>user\n<image>\nWhat?<|im_end|>",
    "don't won't I'll they've we'd",
    "1234567 numbers 3.14159 and -42",
    "",
]


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def artifacts(out: Path) -> None:
    folder = out / "artifacts"
    for name, options in ARTIFACTS.items():
        export(ExportOptions(out=folder / name, **options))
        (folder / name / contract.REPORT).unlink()  # machine-specific timings: not part of the contract
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in MANIFESTS.items():
            export(ExportOptions(out=Path(tmp) / name, **options))
            shutil.copy(Path(tmp) / name / contract.MANIFEST, out / "manifests" / f"{name}.json")


DAMAGES = [  # (name, artifact, mutation, reason)
    ("intact-onnx", "vision-onnx", {"op": "none"}, None),
    ("intact-executorch", "vision-executorch", {"op": "none"}, None),
    ("intact-coreml", "vision-coreml", {"op": "none"}, None),
    ("flipped-byte", "vision-onnx", {"op": "flip_byte", "file": "01-blocks_00-02.onnx.data", "offset": 1000}, "sha256"),
    ("truncated", "vision-onnx", {"op": "truncate", "file": "00-embed.onnx", "bytes": 100}, "size"),
    ("deleted", "vision-onnx", {"op": "delete", "file": "02-head.onnx"}, "missing"),
    ("symlink-outside", "vision-onnx", {"op": "link_outside", "file": "00-embed.onnx.data"}, "outside"),
    (
        "path-escapes",
        "vision-onnx",
        {"op": "set", "path": ["chunks", 0, "files", 0, "path"], "value": "../x.onnx"},
        "outside",
    ),  # fmt: skip
    (
        "absolute-path",
        "vision-onnx",
        {"op": "set", "path": ["chunks", 0, "files", 0, "path"], "value": "/etc/hosts"},
        "outside",
    ),  # fmt: skip
    ("newer-schema", "vision-onnx", {"op": "set", "path": ["schema_version"], "value": 99}, "schema_version"),
    ("schema-version-string", "vision-onnx", {"op": "set", "path": ["schema_version"], "value": "1"}, "manifest"),
    ("unknown-kind", "vision-onnx", {"op": "set", "path": ["kind"], "value": "hologram"}, "manifest"),
    ("no-chunks", "vision-onnx", {"op": "delete_key", "path": ["chunks"]}, "manifest"),
    ("duplicate-chunk", "vision-onnx", {"op": "set", "path": ["chunks", 1, "name"], "value": "embed"}, "manifest"),
    (
        "pipeline-unknown-chunk",
        "vision-onnx",
        {"op": "set", "path": ["pipelines", "vision", 0], "value": "tail"},
        "manifest",
    ),  # fmt: skip
    (
        "no-program",
        "vision-onnx",
        {"op": "set", "path": ["chunks", 0, "files", 0, "role"], "value": "weights"},
        "manifest",
    ),  # fmt: skip
    ("not-json", "vision-onnx", {"op": "write", "file": "manifest.json", "text": "{not json"}, "manifest"),
    (
        "mlpackage-byte",
        "vision-coreml",
        {"op": "flip_byte", "file": "model.mlpackage/Manifest.json", "offset": 10},
        "sha256",
    ),  # fmt: skip
    (
        "mlpackage-extra-file",
        "vision-coreml",
        {"op": "write", "file": "model.mlpackage/extra.bin", "text": "x"},
        "size",
    ),
    ("pte-byte", "vision-executorch", {"op": "flip_byte", "file": "model.pte", "offset": 4096}, "sha256"),
]


MANIFEST_DAMAGES = [  # (name, manifest of manifests/, mutation, reason): its files are not shipped, so the checks
    # that pass the manifest stop at the first missing file
    ("manifest-only", "language-model", {"op": "none"}, "missing"),
    ("manifest-only-stateful", "language-model-coreml", {"op": "none"}, "missing"),
    (
        "int8-embedding-without-scales",
        "language-model",
        {"op": "set", "path": ["llm", "embedding_dtype"], "value": contract.EMBEDDING_INT8},
        "manifest",
    ),  # fmt: skip
    ("manifest-only-tied", "language-model-tied", {"op": "none"}, "missing"),
    (
        "tied-embedding-names-no-chunk",
        "language-model-tied",
        {"op": "set", "path": ["llm", "embedding_tied"], "value": "lm_tail"},
        "manifest",
    ),  # fmt: skip
    (
        "int8-block-embedding-untied",
        "language-model-tied",
        {"op": "delete_key", "path": ["llm", "embedding_tied"]},
        "manifest",
    ),  # fmt: skip
    (
        "int8-block-embedding-without-scales",
        "language-model-tied",
        {"op": "set", "path": ["files", 1, "role"], "value": "scales"},
        "manifest",
    ),  # fmt: skip
    (
        "tied-float-embedding",
        "language-model",
        {"op": "set", "path": ["llm", "embedding_tied"], "value": "lm_head"},
        "manifest",
    ),  # fmt: skip
]


def damaged(out: Path) -> None:
    def case(name: str, base: dict, mutation: dict, reason: str | None) -> dict:
        verdict = "refused" if reason else "accepted"
        return {"name": name, **base, "mutation": mutation, "verdict": verdict, "reason": reason}

    write_json(
        out / "damaged.json",
        [case(n, {"artifact": a}, m, r) for n, a, m, r in DAMAGES]
        + [case(n, {"manifest": k}, m, r) for n, k, m, r in MANIFEST_DAMAGES],
    )


def planner(out: Path) -> None:
    rng = np.random.default_rng(7)
    cases = [
        ([1, 10, 10, 10, 2], None, True),
        ([1, 10, 10, 10, 2], 40, True),
        ([1, 10, 10, 10, 2], 21, True),
        ([1, 10, 10, 10, 2], 12, True),
        ([1, 10, 10, 10, 2], 5, True),
        ([1, 10, 10, 10, 2], 21, False),
        ([3.5, 3.5], 3.5, True),
        ([0.25], 0.24, True),
    ]
    for _ in range(40):
        sizes = [round(float(s), 3) for s in rng.uniform(0.1, 50, int(rng.integers(1, 9)))]
        cases.append((sizes, round(float(rng.uniform(0.05, 1.2) * sum(sizes)), 3), bool(rng.random() < 0.8)))
    vectors = []
    for sizes_mb, budget, overlap in cases:
        chunks = [{"name": f"c{i}", "files": [{"bytes": int(mb * MB)}]} for i, mb in enumerate(sizes_mb)]
        case = {"chunk_bytes": [c["files"][0]["bytes"] for c in chunks], "budget_mb": budget, "overlap": overlap}
        try:
            plan = plan_memory(chunks, budget, overlap)
            case["expected"] = {
                "resident": list(plan.resident),
                "streamed": list(plan.streamed),
                "overlap": plan.overlap,
            }
        except UserError:
            largest = max(case["chunk_bytes"])
            case["expected"] = {"refused": True, "minimum_mb": round(largest / MB, 1)}
        vectors.append(case)
    write_json(out / "planner.json", vectors)


def preprocessing(out: Path) -> None:
    folder = out / "preprocess"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(3)
    shapes = [(23, 37), (30, 40), (40, 30), (64, 64), (37, 100), (5, 7), (48, 16)]
    configs = [(16, [2, 2]), (16, [1, 1]), (24, [1, 3]), (8, [2, 1])]
    cases = []
    for i, (h, w) in enumerate(shapes):
        base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(base).resize((max(1, w // 3), max(1, h // 3))).resize((w, h)))
        rgb = np.where(rng.random((h, w, 1)) < 0.3, base, smooth).astype(np.uint8)  # edges and gradients
        size, grid = configs[i % len(configs)]
        image = Image.fromarray(rgb)
        tensor = preprocess(image, size, tuple(grid), CLIP_MEAN, CLIP_STD)
        pixels = np.stack([np.asarray(v, np.uint8) for v in views(image, size, tuple(grid))])
        name = f"case{i}"
        (folder / f"{name}.rgb").write_bytes(rgb.tobytes())
        (folder / f"{name}.views.u8").write_bytes(pixels.tobytes())
        (folder / f"{name}.f32").write_bytes(tensor.astype("<f4").tobytes())
        cases.append(
            {
                "name": name,
                "width": w,
                "height": h,
                "image_size": size,
                "grid": grid,
                "mean": CLIP_MEAN,
                "std": CLIP_STD,
                "input": f"preprocess/{name}.rgb",
                "views": f"preprocess/{name}.views.u8",
                "expected": f"preprocess/{name}.f32",
                "shape": list(tensor.shape),
            }
        )
    write_json(out / "preprocess.json", cases)


def tokenizer(out: Path) -> None:
    folder = out / "tokenizer"
    build_byte_tokenizer(folder)
    tok = load_tokenizer(folder)
    image = tok.token_to_id(contract.IMAGE_TOKEN)
    encode = [{"text": s, "ids": tok.encode(s).ids} for s in STRINGS]
    decode = [{"ids": c["ids"], "text": tok.decode(c["ids"])} for c in encode if c["ids"]]
    decode.append({"ids": [5, 600, 7], "text": detokenize(tok, [5, 600, 7]), "unknown_ids_as": "<id:N>"})
    prompts = [
        {"template": template, "prompt": p, "image_token_id": image, "ids": prompt_ids(tok, template, p, image)}
        for template in (CHATML, "USER: <image>\n{prompt} ASSISTANT:")
        for p in ("Describe the image in one sentence.", "¿Qué hay en la foto? 🙂", "")
    ]
    write_json(folder / "cases.json", {"encode": encode, "decode": decode, "prompts": prompts})


def unit_velocities(sims: list[float], shape: tuple[int, ...]) -> list[np.ndarray]:
    """Velocities in a 2-D subspace whose consecutive cosine similarities are exactly ``sims``."""
    angles = np.concatenate([[0.0], np.cumsum(np.arccos(sims))])
    size = math.prod(shape)
    return [np.pad([math.cos(a), math.sin(a)], (0, size - 2)).reshape(shape).astype(np.float32) for a in angles]


def sampler(out: Path) -> None:
    rng = np.random.default_rng(11)
    shape = (2, 2, 2, 2)  # [C, T, H, W]
    cases = []
    configs = [
        {"steps": 6, "merge_steps": 0, "leap_at": None, "pixels": [160, 216, 68]},
        {"steps": 6, "merge_steps": 3, "leap_at": 4, "pixels": [160, 216, 68]},
        {"steps": 30, "merge_steps": 15, "leap_at": 15, "pixels": [512, 512, 1]},
    ]
    for config in configs:
        table = rng.standard_normal((config["steps"], *shape)).astype(np.float32)
        cases.append((config, table, None))
    sims = [0.50, 0.60, 0.70, 0.7005, 0.60, 0.7009, 0.71, 0.7105, 0.7102, 0.7108, 0.95]
    for min_steps in (4, 8, 11):
        rule = {"min_steps": min_steps, "patience": 3, "threshold": 1e-3}
        config = {"steps": 12, "merge_steps": 2, "leap_at": None, "pixels": [256, 256, 51], "lpl": rule}
        cases.append((config, np.stack(unit_velocities(sims, shape)), rule))
    vectors = []
    for i, (config, table, rule) in enumerate(cases):
        ratio = shift_ratio(*config["pixels"])
        schedule = timesteps(config["steps"], ratio)
        noise = rng.standard_normal(shape).astype(np.float32)
        calls = []

        def velocity(z, t, function, table=table, calls=calls):
            calls.append(function)
            return table[len(calls) - 1]

        leap = LeapRule(**rule) if rule else None
        result = sample(velocity, noise, schedule, config["merge_steps"], config["leap_at"], leap)
        vectors.append(
            config
            | {
                "name": f"case{i}",
                "shift_ratio": ratio,
                "schedule": schedule.tolist(),
                "noise": noise.ravel().tolist(),
                "shape": list(shape),
                "velocities": table.reshape(len(table), -1).tolist(),
                "expected": {
                    "latent": result.latent.ravel().tolist(),
                    "steps_run": result.steps_run,
                    "leap_step": result.leap_step,
                    "functions": result.functions,
                    "similarities": result.similarities,
                },
            }
        )
    write_json(out / "sampler.json", vectors)


def overlay(out: Path) -> None:
    rng = np.random.default_rng(5)
    cases = []
    for side, partitions, k in ((4, 5, 16), (8, 5, 64), (7, 1, 10), (3, 10, 20)):
        n = side * side
        positions = sorted(rng.choice(partitions * n, k, replace=False).tolist())
        cells = [[p // n, (p % n) // side, p % side] for p in positions]
        counts = np.bincount([c[0] for c in cells], minlength=partitions).tolist()
        cases.append({"side": side, "partitions": partitions, "positions": positions, "cells": cells, "kept": counts})
    write_json(out / "overlay.json", cases)


def npy(out: Path) -> None:
    """Data files as artifacts store them (.npy, float32 and float16), with their values."""
    folder = out / "npy"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(13)
    values = rng.standard_normal((5, 3)).astype(np.float32) * 100
    values[0, :3] = [65504.0, -0.0, 6.1e-5]  # float16 max, negative zero, a float16 subnormal
    cases = []
    for dtype in ("float32", "float16"):
        np.save(folder / f"{dtype}.npy", values.astype(dtype))
        cases.append(
            {"file": f"npy/{dtype}.npy", "shape": [5, 3], "values": values.astype(dtype).astype(float).ravel().tolist()}
        )
    write_json(out / "npy.json", cases)


def embedding(out: Path) -> None:
    """An int8 token-embedding table and its per-row scales as quantized exports store them (.npy), quantized
    from ``source``; ids -> the float32 rows (q * scale) every runtime looks up."""
    folder = out / "embedding"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(17)
    source = (rng.standard_normal((6, 5)) * 0.05).astype(np.float32)
    source[1] = 0  # an all-zero row: scale 1
    source[2, 3] = -0.9  # a row whose largest magnitude is negative: q -127
    source[4] *= 1e-4  # a tiny scale
    values, scales = quantize_rows(source)
    files = {role: f"embedding/{contract.DATA_FILES[role]}" for role in (contract.EMBEDDING, contract.EMBEDDING_SCALES)}
    np.save(out / files[contract.EMBEDDING], values)
    np.save(out / files[contract.EMBEDDING_SCALES], scales)
    ids = [3, 1, 2, 5, 3, 0, 4]
    case = {
        "table": files[contract.EMBEDDING],
        "scales": files[contract.EMBEDDING_SCALES],
        "shape": list(values.shape),
        "source": source.astype(float).ravel().tolist(),
        "values": values.ravel().tolist(),
        "scale_values": scales.astype(float).tolist(),
        "ids": ids,
        "rows": EmbeddingTable(values, scales).rows(ids).astype(float).tolist(),
    }
    write_json(out / "embedding.json", case)

    # int8_block (a table tied to the LM head): q + 128 in uint8 [V, D], scales [V, D / block], block 4 here
    source = (rng.standard_normal((5, 8)) * 0.05).astype(np.float32)
    source[1] = 0  # all-zero blocks: scale 1
    source[2, 5] = -0.9  # a block whose largest magnitude is negative: q -127 (stored 1)
    source[3, :4] *= 1e-4  # a tiny scale beside an ordinary one in the same row
    values, scales = quantize_blocks(source, 4)
    names = {contract.EMBEDDING: "embedding/block_tokens.npy", contract.EMBEDDING_SCALES: "embedding/block_scales.npy"}
    np.save(out / names[contract.EMBEDDING], values)
    np.save(out / names[contract.EMBEDDING_SCALES], scales)
    ids = [2, 1, 3, 0, 4, 2]
    case = {
        "table": names[contract.EMBEDDING],
        "scales": names[contract.EMBEDDING_SCALES],
        "shape": list(values.shape),
        "scales_shape": list(scales.shape),
        "block": 4,
        "zero_point": contract.EMBEDDING_ZERO_POINT,
        "source": source.astype(float).ravel().tolist(),
        "values": values.ravel().tolist(),
        "scale_values": scales.astype(float).ravel().tolist(),
        "ids": ids,
        "rows": EmbeddingTable(values, scales).rows(ids).astype(float).tolist(),
    }
    write_json(out / "embedding_block.json", case)


def main(out: Path) -> None:
    quiet_toolchains()
    for name in ("artifacts", "manifests", "preprocess", "tokenizer", "npy", "embedding"):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "manifests").mkdir(parents=True)
    write_json(out / "contract.json", contract.as_json())
    artifacts(out)
    damaged(out)
    planner(out)
    preprocessing(out)
    tokenizer(out)
    sampler(out)
    overlay(out)
    npy(out)
    embedding(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
