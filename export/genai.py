"""onnxruntime-genai's model builder on a vlm artifact's language model: the library route that
``edgetrim bench --genai`` measures ours against (``edgetrim.runtime.genai_bench`` runs it).

The language model is rebuilt from the artifact's source (a preset: ``decoder.build_preset`` with its seed;
a folder or hub id: its causal LM, as ``decoder.load_causal_lm`` reads it), saved with ``save_pretrained``
beside the artifact's tokenizer.json in a temporary folder, and the builder runs on that folder in a
subprocess: ``python -m onnxruntime_genai.models.builder -i HF -o OUT -p int4|fp32 -e cpu
--extra_options exclude_embeds=true hf_token=false`` (inputs_embeds in, so HiRED's tokens go in as
embeddings). Cached per machine: ``<cache root>/genai/<key>/`` (the builder's files and ``edgetrim_genai.json``),
key = sha256 of (source, precision, onnxruntime-genai version, builder options); built in a ``.partial``
folder and renamed, so a half-built entry never looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edgetrim.export.families import decoder
from edgetrim.export.families.checkpoint import resolve_folder
from edgetrim.export.presets import VLM_PRESETS
from edgetrim.runtime import contract
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.genai_bench import ENTRY, PRECISIONS
from edgetrim.runtime.manifest import Artifact, read_manifest
from edgetrim.runtime.onnx_cache import cache_root

BUILDER = "onnxruntime_genai.models.builder"
PROVIDER = "cpu"
EXTRA_OPTIONS = ("exclude_embeds=true", "hf_token=false")
WEIGHT_FILES = (".json", ".safetensors", ".bin")


def genai_version() -> str:
    """The installed onnxruntime-genai's version, or one line naming the extra to install."""
    try:
        import onnxruntime_genai
    except ImportError:
        raise UserError("`genai` needs onnxruntime-genai's model builder: pip install 'edgetrim[genai]'") from None
    return onnxruntime_genai.__version__


def source_identity(manifest: dict) -> dict:
    """What fixes the language model's weights: a preset's name, decoder preset, seed and std; a folder's path
    and the name, size and mtime of its config and weight files."""
    source = manifest["source"]
    if source["kind"] == "preset":
        lm = VLM_PRESETS[source["name"]].language_model
        return {
            "preset": source["name"],
            "language_model": lm,
            "seed": decoder.SEED,
            "std": decoder.PRESETS[lm].weight_std,
        }
    folder, _ = resolve_folder(source["name"])
    files = sorted(p for p in folder.iterdir() if p.name.endswith(WEIGHT_FILES))
    return {"folder": str(folder.resolve()), "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


def save_language_model(artifact: Artifact, folder: Path) -> None:
    """The artifact's language model (``*ForCausalLM``) and tokenizer.json into ``folder``, for the builder."""
    source = artifact.manifest["source"]
    if source["kind"] == "preset":
        model = decoder.build_preset(VLM_PRESETS[source["name"]].language_model)
    else:
        model = decoder.load_causal_lm(resolve_folder(source["name"])[0])
    model.save_pretrained(folder)
    shutil.copyfile(artifact.data_file(contract.TOKENIZER), folder / "tokenizer.json")


def build_genai(root: Path, precision: str, step: Callable[[str], None] = lambda name: None) -> Path:
    """The builder's model (``precision`` int4 or fp32, CPU) of the vlm artifact ``root``'s language model: a cached
    folder with ``model.onnx``, ``genai_config.json`` and ``edgetrim_genai.json``; built on the first call."""
    artifact = read_manifest(root)
    if artifact.kind != contract.VLM:
        raise UserError(f"{root} is a {artifact.kind} artifact: `genai` compares vlm artifacts")
    if precision not in PRECISIONS:
        raise UserError(f"`genai` precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    identity = {
        "source": source_identity(artifact.manifest),
        "precision": precision,
        "onnxruntime_genai": genai_version(),
        "builder": [BUILDER, "-e", PROVIDER, *EXTRA_OPTIONS],
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
    final = cache_root() / "genai" / key
    if (final / ENTRY).is_file():
        return final
    partial = final.with_name(f".{key}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    hf, scratch = partial / ".hf", partial / ".builder-cache"
    hf.mkdir(parents=True)
    t0 = time.perf_counter()
    step(f"onnxruntime-genai {precision}: save the language model")
    save_language_model(artifact, hf)
    step(f"onnxruntime-genai {precision}: model builder")
    cmd = [sys.executable, "-m", BUILDER, "-i", str(hf), "-o", str(partial), "-p", precision, "-e", PROVIDER]
    cmd += ["-c", str(scratch), "--extra_options", *EXTRA_OPTIONS]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    shutil.rmtree(hf, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)
    if proc.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        tail = ((proc.stderr or proc.stdout).strip().splitlines() or ["no output"])[-1]
        raise UserError(f"onnxruntime-genai's model builder failed on {artifact.manifest['source']['name']}: {tail}")
    entry = identity | {"build_s": round(time.perf_counter() - t0, 1)}
    (partial / ENTRY).write_text(json.dumps(entry, indent=1))
    try:
        partial.rename(final)
    except OSError:  # another process published the same entry first
        shutil.rmtree(partial, ignore_errors=True)
    return final
