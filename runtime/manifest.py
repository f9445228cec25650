"""``manifest.json``: read, checked and verified before anything is loaded; written by the exporter.

Schema: ``manifest.schema.json`` beside this file (published; the tests validate every export
against it). This reader is dependency-free and checks what the runtime relies on; the names it
uses are those of ``edgetrim.runtime.contract``.

``chunks`` lists every program of the artifact (unique names). ``pipelines`` names the ordered
chunk lists the runtime runs, e.g. ``{"vision": [...], "prefill": [...], "decode": [...]}``;
without it the artifact has one pipeline, all chunks in order. A chunk may hold several
``functions`` sharing its weights: with the chunk's inputs and outputs (``plain`` / ``tdtm``), or
each with its own ``inputs`` / ``outputs`` (a language model's ``prefill_<n>`` and ``decode``).
Top-level ``files`` lists data that belongs to no chunk (embedding tables, tokenizer files); it is
verified like chunk files. No listed file may resolve outside the artifact folder (symlinks included).

Verification (``open_artifact``): every listed file present, inside the folder and of its listed
size, then its sha256 -- hashed on the first open and again whenever a file's stat changed; an
unchanged artifact is trusted from the stamp of its last verification (``verify_stamp``;
``verify="always"`` hashes every time).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from edgetrim.runtime import contract, verify_stamp
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.verify_stamp import ONCE, POLICIES, STAMPED, VERIFIED, Verification

SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")
DAMAGED = "the manifest is damaged, re-export the artifact"
EDGETRIM_VERSION = "0.3.0"
# artifact kind -> top-level keys the runtime reads
REQUIRED_KEYS = {
    contract.VISION_ENCODER: ("target", "chunks", "preprocessing", "reduction", "source"),
    contract.VLM: ("target", "chunks", "pipelines", "preprocessing", "reduction", "source", "llm", "files"),
    contract.LANGUAGE_MODEL: ("target", "chunks", "pipelines", "source", "llm", "files"),
    contract.VIDEO_DENOISER: ("target", "chunks", "pipelines", "source", "video"),
    contract.TEXT_ENCODER: ("target", "chunks", "source", "text_encoder"),
    contract.VIDEO_DECODER: ("target", "chunks", "pipelines", "source", "decoder"),
}


@dataclass(frozen=True)
class Artifact:
    root: Path
    manifest: dict
    manifest_sha256: str = field(default="", compare=False, repr=False)  # of the manifest text parsed
    verification: Verification | None = field(default=None, compare=False)  # set by open_artifact

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def chunks(self) -> list[dict]:
        return self.manifest["chunks"]

    @property
    def random_weights(self) -> bool:
        return bool(self.manifest["source"]["random_weights"])

    @property
    def pipelines(self) -> dict[str, list[str]]:
        """Pipeline name -> chunk names in run order (one pipeline, ``main``, when the manifest names none)."""
        return self.manifest.get("pipelines") or {contract.DEFAULT_PIPELINE: [c["name"] for c in self.chunks]}

    def pipeline(self, name: str | None = None) -> list[dict]:
        """The chunks of pipeline ``name`` in run order (``None``: the only pipeline, or ``main``)."""
        pipelines = self.pipelines
        if name is None:
            name = next(iter(pipelines)) if len(pipelines) == 1 else contract.DEFAULT_PIPELINE
        if name not in pipelines:
            raise UserError(f"the artifact has no pipeline {name!r} (it has {', '.join(pipelines)}): re-export it")
        by_name = {c["name"]: c for c in self.chunks}
        return [by_name[n] for n in pipelines[name]]

    def file(self, chunk: dict, role: str) -> Path:
        return self.root / next(f["path"] for f in chunk["files"] if f["role"] == role)

    def data_file(self, role: str) -> Path:
        """A top-level data file (``files``) by role, e.g. ``embedding`` or ``tokenizer``."""
        for entry in self.manifest.get("files", []):
            if entry["role"] == role:
                return self.root / entry["path"]
        raise UserError(f"the artifact lists no {role} file: re-export it")

    def weight_bytes(self, chunk: dict) -> int:
        """Bytes a chunk's sessions read: its own files, and for the head tied to the embedding table
        (``llm.embedding_tied``) the table and its scales, which its graphs read as their weight."""
        own = sum(f["bytes"] for f in chunk["files"])
        if self.manifest.get("llm", {}).get("embedding_tied") != chunk["name"]:
            return own
        tied = (contract.EMBEDDING, contract.EMBEDDING_SCALES)
        return own + sum(f["bytes"] for f in self.manifest.get("files", []) if f["role"] in tied)

    def program(self, chunk: dict, function: str | None = None) -> tuple[Path, str]:
        """(program file, method name) that runs ``function`` of a chunk.

        A chunk with ``functions`` maps each to ``{"file": path, "method": name}`` (method: the
        ExecuTorch method or CoreML function; an ONNX file holds one graph); ``None`` picks its first.
        A chunk without ``functions`` has one program, used whatever function the pipeline runs.
        """
        functions = chunk.get("functions")
        if not functions:
            return self.file(chunk, contract.PROGRAM), contract.DEFAULT_METHOD
        function = function or next(iter(functions))
        if function not in functions:
            raise UserError(
                f"chunk {chunk['name']!r} has no function {function!r} (it has {', '.join(functions)}): "
                "re-export the artifact with that variant"
            )
        entry = functions[function]
        return self.root / entry["file"], entry.get("method", contract.DEFAULT_METHOD)

    def io(self, chunk: dict, function: str | None = None) -> tuple[list[dict], list[dict]]:
        """(inputs, outputs) of ``function`` of a chunk, each spec {name, shape, dtype}: the function entry's
        own when it lists them (a language model's ``prefill_<n>`` / ``decode``), else the chunk's."""
        entry = (chunk.get("functions") or {}).get(function or "", {})
        return entry.get("inputs", chunk["inputs"]), entry.get("outputs", chunk["outputs"])

    def programs(self) -> list[tuple[str, dict, str | None, Path, str]]:
        """Every program of the artifact: (label ``chunk[.function]``, chunk, function, path, sha256)."""
        found = []
        for chunk in self.chunks:
            for function in chunk.get("functions") or [None]:
                path, _ = self.program(chunk, function)
                relative = path.relative_to(self.root).as_posix()
                sha = next(f["sha256"] for f in chunk["files"] if f["path"] == relative)
                found.append((chunk["name"] + (f".{function}" if function else ""), chunk, function, path, sha))
        return found


# ------------------------------------------------------------------------------------------- digests


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while data := fh.read(block):
            digest.update(data)
    return digest.hexdigest()


def folder_files(path: Path) -> list[Path]:
    """Files under a folder (an .mlpackage), sorted by relative POSIX path; symlinked folders are not entered."""
    found = [Path(top) / name for top, _, files in os.walk(path) for name in files]
    return sorted(found, key=lambda f: f.relative_to(path).as_posix())


def digest_path(path: Path) -> tuple[int, str]:
    """(bytes, sha256) of a file, or of a folder such as an .mlpackage (its files in path order:
    each file's relative POSIX path, then its sha256 as 32 bytes)."""
    if not path.is_dir():
        return path.stat().st_size, sha256_file(path)
    digest, size = hashlib.sha256(), 0
    for f in folder_files(path):
        digest.update(f.relative_to(path).as_posix().encode())
        digest.update(bytes.fromhex(sha256_file(f)))
        size += f.stat().st_size
    return size, digest.hexdigest()


# ------------------------------------------------------------------------------------------- reading


def read_manifest(root: str | Path) -> Artifact:
    """Parse and sanity-check ``root/manifest.json``; does not touch the chunk files."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder: pass the folder edgetrim export wrote (it holds manifest.json)")
    path = root / contract.MANIFEST
    if not path.is_file():
        raise UserError(f"{root} has no {contract.MANIFEST}: pass a folder written by edgetrim export")
    try:
        text = path.read_text()
        manifest = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}): re-export the artifact") from None
    if not isinstance(manifest, dict) or "schema_version" not in manifest:
        raise UserError(f"{path} is not an edgetrim manifest (no schema_version): re-export the artifact")
    version = manifest["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UserError(f"{path} has schema version {version!r}, not a version number: re-export the artifact")
    if version > contract.SCHEMA_VERSION:
        raise UserError(
            f"{path} has schema version {version}, newer than this runtime's {contract.SCHEMA_VERSION}: "
            "upgrade edgetrim"
        )
    kind = manifest.get("kind", contract.VISION_ENCODER)
    if kind not in REQUIRED_KEYS:
        raise UserError(f"{path} describes a {kind!r} artifact, which this runtime does not know: upgrade edgetrim")
    for key in REQUIRED_KEYS[kind]:
        if key not in manifest:
            raise UserError(f"{path} lacks {key!r}: {DAMAGED}")
    check_chunks(path, manifest["chunks"])
    check_pipelines(path, manifest)
    check_file_entries(path, "the artifact", manifest.get("files", []))
    check_embedding(path, manifest)
    return Artifact(root, manifest, hashlib.sha256(text.encode()).hexdigest())


def check_file_entries(path: Path, owner: str, files) -> None:
    """File entries: typed, and inside the artifact folder."""
    if not isinstance(files, list):
        raise UserError(f"{path}: {owner} has a files entry that is not a list: {DAMAGED}")
    for entry in files:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and isinstance(entry.get("role"), str)
            and isinstance(entry.get("bytes"), int)
            and isinstance(entry.get("sha256"), str)
        ):
            raise UserError(f"{path}: {owner} has a file entry without path, role, bytes or sha256: {DAMAGED}")
        rel = PurePosixPath(entry["path"])
        if not entry["path"] or rel.is_absolute() or ".." in rel.parts or "\\" in entry["path"]:
            raise UserError(f"{path}: file {entry['path']!r} is outside the artifact folder: {DAMAGED}")


def check_embedding(path: Path, manifest: dict) -> None:
    """An int8 / int8_block embedding table lists its scales (``embedding_scales``); a table tied to the LM
    head (``llm.embedding_tied``, int8_block and only it) names one of the artifact's chunks."""
    llm = manifest.get("llm")
    if not isinstance(llm, dict):
        return
    dtype, tied = llm.get("embedding_dtype"), llm.get("embedding_tied")
    if dtype in (contract.EMBEDDING_INT8, contract.EMBEDDING_INT8_BLOCK) and contract.EMBEDDING_SCALES not in {
        entry["role"] for entry in manifest.get("files", [])
    }:
        raise UserError(
            f"{path}: llm.embedding_dtype is {dtype} but the artifact lists no {contract.EMBEDDING_SCALES} file "
            f"(the table's {'block' if dtype == contract.EMBEDDING_INT8_BLOCK else 'per-row'} scales): {DAMAGED}"
        )
    if (dtype == contract.EMBEDDING_INT8_BLOCK) != ("embedding_tied" in llm):
        raise UserError(
            f"{path}: llm.embedding_dtype is {dtype} {'with' if 'embedding_tied' in llm else 'without'} "
            f"llm.embedding_tied: a tied table is int8_block and names its head chunk, and only it: {DAMAGED}"
        )
    if "embedding_tied" in llm and not any(chunk["name"] == tied for chunk in manifest["chunks"]):
        raise UserError(f"{path}: llm.embedding_tied names no chunk of the artifact ({tied!r}): {DAMAGED}")


def check_chunks(path: Path, chunks) -> None:
    """The chunk and file entries the runtime indexes into: present, typed, inside the folder, names unique."""
    if not isinstance(chunks, list) or not chunks:
        raise UserError(f"{path} lists no chunks: re-export the artifact")
    seen: set[str] = set()
    for i, chunk in enumerate(chunks):
        if not isinstance(chunk, dict) or any(k not in chunk for k in ("name", "files", "inputs", "outputs")):
            raise UserError(f"{path}: chunk {i} lacks name, files, inputs or outputs: {DAMAGED}")
        if chunk["name"] in seen:
            raise UserError(f"{path}: two chunks are named {chunk['name']!r}: {DAMAGED}")
        seen.add(chunk["name"])
        files = chunk["files"]
        if not isinstance(files, list) or not files:
            raise UserError(f"{path}: chunk {chunk['name']!r} lists no files: {DAMAGED}")
        check_file_entries(path, f"chunk {chunk['name']!r}", files)
        if not any(entry["role"] == contract.PROGRAM for entry in files):
            raise UserError(f"{path}: chunk {chunk['name']!r} lists no program file: {DAMAGED}")
        listed = {entry["path"] for entry in files}
        functions = chunk.get("functions", {})
        if not isinstance(functions, dict) or any(
            not isinstance(f, dict) or f.get("file") not in listed for f in functions.values()
        ):
            raise UserError(f"{path}: chunk {chunk['name']!r} has a function whose file it does not list: {DAMAGED}")


def check_pipelines(path: Path, manifest: dict) -> None:
    """Every pipeline is a non-empty list of existing chunk names."""
    pipelines = manifest.get("pipelines")
    if pipelines is None:
        return
    names = {c["name"] for c in manifest["chunks"]}
    if not isinstance(pipelines, dict) or not pipelines:
        raise UserError(f"{path}: pipelines must map names to chunk lists: {DAMAGED}")
    for name, members in pipelines.items():
        if not isinstance(members, list) or not members or any(m not in names for m in members):
            raise UserError(f"{path}: pipeline {name!r} names chunks the manifest does not list: {DAMAGED}")


# ------------------------------------------------------------------------------------------- verification


def check_inside(root: Path, owner: str, entry: dict, path: Path) -> None:
    """Refuse a listed file (or a file inside a listed folder) that resolves outside ``root``."""
    inside = root.resolve()
    targets = [path]
    if path.is_dir() and not path.is_symlink():
        targets += [Path(top) / name for top, dirs, files in os.walk(path) for name in dirs + files]
    for target in targets:
        if not target.resolve().is_relative_to(inside):
            raise UserError(
                f"{owner}: {entry['path']} resolves outside the artifact folder ({target.resolve()}): "
                "copy the real files into the artifact instead of linking to them"
            )


def path_size(path: Path) -> int:
    """Bytes of a file, or of the files inside a folder (as ``digest_path`` counts them)."""
    return sum(f.stat().st_size for f in folder_files(path)) if path.is_dir() else path.stat().st_size


def check_entry(root: Path, owner: str, entry: dict) -> Path:
    """The cheap checks of a listed file, run on every open: present, inside the folder, of its listed size."""
    path = root / entry["path"]
    if not path.exists():
        raise UserError(f"{owner}: file {entry['path']} is missing: re-export or re-copy it")
    check_inside(root, owner, entry, path)
    size = path_size(path)
    if size != entry["bytes"]:
        raise UserError(
            f"{owner}: {entry['path']} has {size} bytes, the manifest says {entry['bytes']}: "
            "the file is truncated or replaced, re-copy the artifact"
        )
    return path


def verify_entry(root: Path, owner: str, entry: dict) -> None:
    """Refuse a listed file that is missing, resized, altered (sha256) or outside the folder."""
    path = check_entry(root, owner, entry)
    _, sha = digest_path(path)
    if sha != entry["sha256"]:
        raise UserError(
            f"{owner}: {entry['path']} fails its sha256 check: the file is corrupted or altered, re-copy the artifact"
        )


def listed_entries(artifact: Artifact) -> list[tuple[str, dict]]:
    """(owner, entry) of every listed file: chunk files, then top-level data."""
    found = [(f"chunk {chunk['name']!r}", entry) for chunk in artifact.chunks for entry in chunk["files"]]
    return found + [(f"{entry['role']} data", entry) for entry in artifact.manifest.get("files", [])]


def verify_files(artifact: Artifact) -> None:
    """Refuse the artifact if any listed file (of a chunk, or top-level data) is missing, resized or altered."""
    for owner, entry in listed_entries(artifact):
        verify_entry(artifact.root, owner, entry)


def stat_entry(path: Path) -> dict:
    st = path.stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "dev": st.st_dev}


def snapshot(artifact: Artifact) -> tuple[dict, dict] | None:
    """(manifest stat + sha256, artifact-relative path -> stat of every listed file and of every file inside a
    listed folder), or None when one cannot be read."""
    root, files = artifact.root, {}
    try:
        manifest = {"sha256": artifact.manifest_sha256, **stat_entry(root / contract.MANIFEST)}
        for _, entry in listed_entries(artifact):
            path = root / entry["path"]
            for f in folder_files(path) if path.is_dir() else [path]:
                files[f.relative_to(root).as_posix()] = stat_entry(f)
    except OSError:
        return None
    return manifest, files


def verify_artifact(artifact: Artifact, verify: str = ONCE) -> Artifact:
    """The artifact with its files checked under the ``verify`` policy, and how (``.verification``).

    ``once``: if the stamp of this folder's last verification matches the manifest and every file's stat,
    only the cheap checks run; otherwise every file is hashed. ``always``: every file is hashed. A
    verification that passes with no file changing meanwhile writes the stamp; one that fails removes it.
    """
    if verify not in POLICIES:
        raise UserError(f"`verify` {verify!r} is not a policy: pass {' or '.join(POLICIES)}")
    t0, root = time.perf_counter(), artifact.root
    stamp = verify_stamp.load(root) if verify == ONCE else None
    if stamp is not None:
        try:
            for owner, entry in listed_entries(artifact):
                check_entry(root, owner, entry)
            now = snapshot(artifact)
        except UserError:  # refused below by the full verification, with the same message as without a stamp
            now = None
        if now is not None and verify_stamp.matches(stamp, *now):
            return replace(artifact, verification=checked(STAMPED, artifact, now[1], t0, stamp["verified_at"]))
    before, verified_at = snapshot(artifact), verify_stamp.now_iso()
    try:
        verify_files(artifact)
    except UserError:
        verify_stamp.remove(root)
        raise
    if before is not None and snapshot(artifact) == before:  # no file changed while it was hashed
        verify_stamp.save(root, *before, verified_at)
    files = before[1] if before is not None else None
    return replace(artifact, verification=checked(VERIFIED, artifact, files, t0, verified_at))


def checked(state: str, artifact: Artifact, files: dict | None, t0: float, verified_at: str) -> Verification:
    """What an open checked: ``files`` from its snapshot (None: count the listed entries)."""
    if files is None:
        count, size = len(entries := listed_entries(artifact)), sum(e["bytes"] for _, e in entries)
    else:
        count, size = len(files), sum(f["bytes"] for f in files.values())
    return Verification(state, count, size, (time.perf_counter() - t0) * 1e3, verified_at)


def open_artifact(root: str | Path, kinds: tuple[str, ...] = contract.KINDS, verify: str = ONCE) -> Artifact:
    """Read, check and sha256-verify an artifact (``verify``: ``once`` trusts the stamp of an earlier
    verification while no file changed, ``always`` hashes every file); refuse one whose kind is not in
    ``kinds``. ``.verification`` says which happened."""
    artifact = read_manifest(root)
    if artifact.kind not in kinds:
        raise UserError(
            f"{root} is a {artifact.kind} artifact; this takes {' or '.join(kinds)} artifacts: "
            "pass an artifact of that kind"
        )
    return verify_artifact(artifact, verify)


# ------------------------------------------------------------------------------------------- writing


def file_entry(root: Path, path: Path, role: str) -> dict:
    """Manifest entry for a file or an .mlpackage folder inside ``root``."""
    size, sha = digest_path(path)
    return {"path": path.relative_to(root).as_posix(), "role": role, "bytes": size, "sha256": sha}


def manifest_header(kind: str, target: str, precision: str, source: dict) -> dict:
    """The keys every manifest starts with."""
    return {
        "schema_version": contract.SCHEMA_VERSION,
        "edgetrim_version": EDGETRIM_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "kind": kind,
        "target": target,
        "precision": precision,
        "source": source,
    }


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
