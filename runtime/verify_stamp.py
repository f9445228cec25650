"""Verify once: a stat stamp of an artifact that passed its sha256 checks, kept in the machine's cache.

Hashing every listed file on every open costs seconds for a multi-GB artifact. After a full
verification passes, ``open_artifact`` writes a stamp OUTSIDE the artifact, in the cache root of
``onnx_cache`` (``$EDGETRIM_CACHE``, else ``$XDG_CACHE_HOME/edgetrim``, else ``~/.cache/edgetrim``):
``<root>/verified/<key>.json``, key = sha256 of the artifact's resolved folder path (one stamp per
folder: a re-export overwrites it). It holds the sha256, bytes, mtime_ns, inode and device of
``manifest.json`` and, per file (every listed file; every file inside a listed folder such as an
.mlpackage), its bytes, mtime_ns, inode and device, all taken before the hashing and unchanged
after it. A later open under the ``once`` policy skips the hashing when every entry still matches
(the cheap checks -- files present, inside the folder, sizes -- always run); any difference (a size,
an mtime, an inode, a file added to or removed from a listed folder, another manifest) means a full
verification, which rewrites the stamp if it passes and removes it if it fails. ``always`` hashes
every time (and refreshes the stamp).

Known limit of a stat stamp: content rewritten in place with its size kept and its mtime put back
(``os.utime``) keeps the inode and matches the stamp; ``verify="always"`` catches it.

Stamps are written to a temporary file and renamed. A stamp that cannot be read or parsed counts as
no stamp; when the cache cannot be written, the stamp is kept in this process only (so a second open
in the same run is not hashed again) and the next process verifies in full.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgetrim.runtime.onnx_cache import cache_root

FORMAT = 1
FOLDER = "verified"
ONCE, ALWAYS = "once", "always"
POLICIES = (ONCE, ALWAYS)
VERIFIED, STAMPED = "verified", "stamped"  # this open hashed every file / trusted an unchanged stamp
_IN_PROCESS: dict[str, dict] = {}  # stamps the cache could not hold, by key


@dataclass(frozen=True)
class Verification:
    """How an open checked the artifact's files."""

    state: str  # VERIFIED or STAMPED
    files: int  # files checked (a listed folder counts its files)
    bytes: int
    ms: float  # time this open spent on the check
    verified_at: str  # ISO 8601 (UTC) of the sha256 verification this open relies on

    def describe(self) -> str:
        """One line: ``sha256 of 5 files (812 ms)`` or ``unchanged since verified 2026-12-02 05:10 (stamp)``."""
        if self.state == VERIFIED:
            return f"sha256 of {self.files} files ({self.ms:.0f} ms)"
        try:
            when = dt.datetime.fromisoformat(self.verified_at).astimezone().strftime("%Y-%m-%d %H:%M")
        except ValueError:
            when = self.verified_at
        return f"unchanged since verified {when} (stamp)"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def key(root: Path) -> str:
    return hashlib.sha256(str(root.resolve()).encode("utf-8", "surrogateescape")).hexdigest()


def stamp_path(root: Path) -> Path:
    return cache_root() / FOLDER / f"{key(root)}.json"


def load(root: Path) -> dict | None:
    """The stamp of ``root`` (a folder path), or None: missing, unreadable, corrupt or of another format."""
    if key(root) in _IN_PROCESS:
        return _IN_PROCESS[key(root)]
    try:
        stamp = json.loads(stamp_path(root).read_bytes())
    except (OSError, ValueError):
        return None
    if not (
        isinstance(stamp, dict)
        and stamp.get("format") == FORMAT
        and stamp.get("root") == str(root.resolve())
        and isinstance(stamp.get("manifest"), dict)
        and isinstance(stamp.get("files"), dict)
        and isinstance(stamp.get("verified_at"), str)
    ):
        return None
    try:
        dt.datetime.fromisoformat(stamp["verified_at"])
    except ValueError:
        return None
    return stamp


def matches(stamp: dict, manifest: dict, files: dict) -> bool:
    """Whether the stamp was taken of this manifest and these files, every stat identical."""
    return stamp["manifest"] == manifest and stamp["files"] == files


def save(root: Path, manifest: dict, files: dict, verified_at: str) -> None:
    """Write the stamp atomically; if the cache cannot be written, keep it for this process only."""
    stamp = {
        "format": FORMAT,
        "root": str(root.resolve()),
        "verified_at": verified_at,
        "manifest": manifest,
        "files": files,
    }
    final = stamp_path(root)
    tmp = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=".partial", dir=final.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(stamp, fh, indent=1)
        os.replace(tmp, final)
        _IN_PROCESS.pop(key(root), None)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        _IN_PROCESS[key(root)] = stamp


def remove(root: Path) -> None:
    """Forget ``root``'s stamp (its verification failed)."""
    _IN_PROCESS.pop(key(root), None)
    try:
        stamp_path(root).unlink(missing_ok=True)
    except OSError:
        pass
