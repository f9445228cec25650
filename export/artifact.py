"""Writing an artifact folder: stage in a hidden temp folder beside ``--out``, rename at the end."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import MANIFEST, digest_path


def check_out_dir(out: Path) -> None:
    """Refuse to replace a folder that is not an edgetrim artifact (or empty)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise UserError(f"--out {out} exists and is not an edgetrim artifact: choose a new or empty folder")


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """Yield a temp folder; on success it replaces ``out`` atomically-ish, on failure it is removed."""
    check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def file_entry(root: Path, path: Path, role: str) -> dict:
    """Manifest entry for a file or an .mlpackage folder."""
    size, sha = digest_path(path)
    return {"path": path.relative_to(root).as_posix(), "role": role, "bytes": size, "sha256": sha}


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
