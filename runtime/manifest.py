"""The artifact contract: ``manifest.json`` read, checked and verified before anything is loaded.

Schema: ``manifest.schema.json`` beside this file (published; the tests validate every export
against it). This reader is dependency-free and checks what the runtime relies on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgetrim.runtime.errors import UserError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")


@dataclass(frozen=True)
class Artifact:
    root: Path
    manifest: dict

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def chunks(self) -> list[dict]:
        return self.manifest["chunks"]

    def file(self, chunk: dict, role: str) -> Path:
        return self.root / next(f["path"] for f in chunk["files"] if f["role"] == role)


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while data := fh.read(block):
            digest.update(data)
    return digest.hexdigest()


def digest_path(path: Path) -> tuple[int, str]:
    """(bytes, sha256) of a file, or of a folder such as an .mlpackage (its files in path order)."""
    if not path.is_dir():
        return path.stat().st_size, sha256_file(path)
    digest, size = hashlib.sha256(), 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f.relative_to(path).as_posix().encode())
        digest.update(bytes.fromhex(sha256_file(f)))
        size += f.stat().st_size
    return size, digest.hexdigest()


def read_manifest(root: str | Path) -> Artifact:
    """Parse and sanity-check ``root/manifest.json``; does not touch the chunk files."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder: pass the folder edgetrim export wrote (it holds manifest.json)")
    path = root / MANIFEST
    if not path.is_file():
        raise UserError(f"{root} has no {MANIFEST}: pass a folder written by edgetrim export")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}): re-export the artifact") from None
    if not isinstance(manifest, dict) or "schema_version" not in manifest:
        raise UserError(f"{path} is not an edgetrim manifest (no schema_version): re-export the artifact")
    version = manifest["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UserError(f"{path} has schema version {version!r}, not a version number: re-export the artifact")
    if version > SCHEMA_VERSION:
        raise UserError(
            f"{path} has schema version {version}, newer than this runtime's {SCHEMA_VERSION}: upgrade edgetrim"
        )
    for key in ("target", "chunks", "preprocessing", "reduction", "source"):
        if key not in manifest:
            raise UserError(f"{path} lacks {key!r}: the manifest is damaged, re-export the artifact")
    check_chunks(path, manifest["chunks"])
    return Artifact(root, manifest)


def check_chunks(path: Path, chunks) -> None:
    """The chunk and file entries the runtime indexes into: present, typed, and inside the folder."""
    damaged = "the manifest is damaged, re-export the artifact"
    if not isinstance(chunks, list) or not chunks:
        raise UserError(f"{path} lists no chunks: re-export the artifact")
    for i, chunk in enumerate(chunks):
        if not isinstance(chunk, dict) or any(k not in chunk for k in ("name", "files", "inputs", "outputs")):
            raise UserError(f"{path}: chunk {i} lacks name, files, inputs or outputs: {damaged}")
        files = chunk["files"]
        if not isinstance(files, list) or not files:
            raise UserError(f"{path}: chunk {chunk['name']!r} lists no files: {damaged}")
        for entry in files:
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("path"), str)
                and isinstance(entry.get("role"), str)
                and isinstance(entry.get("bytes"), int)
                and isinstance(entry.get("sha256"), str)
            ):
                raise UserError(
                    f"{path}: chunk {chunk['name']!r} has a file entry without path, role, bytes or sha256: {damaged}"
                )
            rel = PurePosixPath(entry["path"])
            if not entry["path"] or rel.is_absolute() or ".." in rel.parts or "\\" in entry["path"]:
                raise UserError(f"{path}: file {entry['path']!r} is outside the artifact folder: {damaged}")
        if not any(entry["role"] == "program" for entry in files):
            raise UserError(f"{path}: chunk {chunk['name']!r} lists no program file: {damaged}")


def verify_files(artifact: Artifact) -> None:
    """Refuse the artifact if any listed file is missing, resized or altered (sha256)."""
    for chunk in artifact.chunks:
        for entry in chunk["files"]:
            path = artifact.root / entry["path"]
            if not path.exists():
                raise UserError(f"chunk {chunk['name']!r}: file {entry['path']} is missing: re-export or re-copy it")
            size, sha = digest_path(path)
            if size != entry["bytes"]:
                raise UserError(
                    f"chunk {chunk['name']!r}: {entry['path']} has {size} bytes, the manifest says {entry['bytes']}: "
                    "the file is truncated or replaced, re-copy the artifact"
                )
            if sha != entry["sha256"]:
                raise UserError(
                    f"chunk {chunk['name']!r}: {entry['path']} fails its sha256 check: the file is corrupted or "
                    "altered, re-copy the artifact"
                )


def open_artifact(root: str | Path) -> Artifact:
    artifact = read_manifest(root)
    verify_files(artifact)
    return artifact
