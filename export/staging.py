"""Writing an artifact folder: stage in a hidden folder beside ``out``, rename at the end.

A staging folder ``.<out>.partial-XXXX`` holds an ``.owner`` file (pid and process start time). An
export that dies (killed, out of memory) leaves it behind; the next export to the same ``out``
removes the staging folders whose owner is gone and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgetrim.runtime import contract
from edgetrim.runtime.errors import UserError

OWNER = ".owner"


def check_out_dir(out: Path) -> None:
    """Refuse to replace a folder that is not an edgetrim artifact (or empty)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / contract.MANIFEST).is_file())):
        raise UserError(f"`out` {out} exists and is not an edgetrim artifact: choose a new or empty folder")


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux), None where it cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_alive(folder: Path) -> bool:
    """Whether the export that made staging ``folder`` still runs (pid alive, same start time)."""
    try:
        owner = json.loads((folder / OWNER).read_text())
        pid = int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no readable owner: it died before writing one, or is not ours
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = process_start(pid)
    return started is None or owner.get("started") in (None, started)


def clean_stale(out: Path) -> list[Path]:
    """Remove staging (``.<out>.partial-*``) and swap (``.<out>.old``) folders of dead exports; returns them."""
    removed = []
    for folder in sorted(out.parent.glob(f".{out.name}.partial-*")):
        if folder.is_dir() and not owner_alive(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    old = out.with_name(f".{out.name}.old")
    if old.is_dir() and not out.exists():  # a swap that died between its two renames: put the old one back
        old.rename(out)
    elif old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    return removed


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """Yield a hidden folder; on success it replaces ``out``, on failure it is removed."""
    check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    pid = os.getpid()
    (tmp / OWNER).write_text(json.dumps({"pid": pid, "started": process_start(pid)}))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / OWNER).unlink()
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
