"""Verify once (issue 14, item 6): sha256 on the first open, a stat stamp in the cache after that.

Every test works on a fresh copy of an artifact (new folder, new inodes) and a cache of its own.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from edgetrim.runtime import contract, manifest, verify_stamp
from edgetrim.runtime.bench import BenchOptions
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import open_artifact

CONFORMANCE = Path(__file__).parents[1] / "apps" / "conformance" / "artifacts"
DATA = "model.onnx.data"  # the larger of tiny-onnx's two listed files


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("EDGETRIM_CACHE", str(root))
    return root


@pytest.fixture
def hashed(monkeypatch) -> list[Path]:
    """Every file the sha256 function reads, in order."""
    seen: list[Path] = []
    real = manifest.sha256_file

    def counting(path: Path, *args, **kwargs) -> str:
        seen.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(manifest, "sha256_file", counting)
    return seen


@pytest.fixture
def art(tiny_onnx, tmp_path, cache) -> Path:
    root = tmp_path / "art"
    shutil.copytree(tiny_onnx, root)
    return root


def flip_byte(path: Path, keep_mtime: bool = False) -> None:
    """Flip the middle byte in place (same inode, same size); optionally put the mtime back."""
    before = path.stat()
    with path.open("r+b") as fh:
        fh.seek(before.st_size // 2)
        byte = fh.read(1)[0]
        fh.seek(before.st_size // 2)
        fh.write(bytes([byte ^ 0xFF]))
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_first_open_hashes_then_the_stamp_skips_hashing(art, hashed):
    first = open_artifact(art)
    assert first.verification.state == verify_stamp.VERIFIED
    assert sorted(p.name for p in hashed) == ["model.onnx", DATA]
    assert first.verification.files == 2 and first.verification.bytes == sum(f.stat().st_size for f in hashed)
    stamp = json.loads(verify_stamp.stamp_path(art).read_text())
    assert stamp["root"] == str(art.resolve()) and stamp["verified_at"] == first.verification.verified_at
    assert set(stamp["files"]) == {"model.onnx", DATA}
    data = (art / DATA).stat()
    assert stamp["files"][DATA] == {
        "bytes": data.st_size,
        "mtime_ns": data.st_mtime_ns,
        "ino": data.st_ino,
        "dev": data.st_dev,
    }
    assert stamp["manifest"]["sha256"] == first.manifest_sha256 and stamp["manifest"]["bytes"] > 0
    assert not any(p.name.endswith(".partial") for p in verify_stamp.stamp_path(art).parent.iterdir())

    hashed.clear()
    second = open_artifact(art)
    assert second.verification.state == verify_stamp.STAMPED and hashed == []
    assert second == first and second.manifest == first.manifest
    assert second.verification.verified_at == first.verification.verified_at
    assert second.verification.describe().startswith("unchanged since verified ")
    assert first.verification.describe().startswith("sha256 of 2 files (")


def test_always_hashes_every_open_and_refreshes_the_stamp(art, hashed):
    open_artifact(art)
    first = json.loads(verify_stamp.stamp_path(art).read_text())
    hashed.clear()
    again = open_artifact(art, verify="always")
    assert again.verification.state == verify_stamp.VERIFIED and len(hashed) == 2
    assert json.loads(verify_stamp.stamp_path(art).read_text())["files"] == first["files"]
    with pytest.raises(UserError, match="verify"):
        open_artifact(art, verify="sometimes")


def test_a_flipped_byte_is_refused_and_the_stamp_removed(art, hashed):
    open_artifact(art)
    assert verify_stamp.stamp_path(art).exists()
    flip_byte(art / DATA)  # the write moves the mtime
    hashed.clear()
    with pytest.raises(UserError, match="sha256"):
        open_artifact(art)
    assert hashed  # re-verified, not trusted
    assert not verify_stamp.stamp_path(art).exists()
    with pytest.raises(UserError, match="sha256"):  # and stays refused
        open_artifact(art)


def test_content_changed_with_its_mtime_put_back_passes_the_stamp_but_not_always(art):
    """The known limit of a stat stamp: same size, same mtime, same inode looks unchanged. `always` hashes."""
    open_artifact(art)
    before = (art / DATA).stat()
    flip_byte(art / DATA, keep_mtime=True)
    after = (art / DATA).stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert open_artifact(art).verification.state == verify_stamp.STAMPED  # accepted: the stamp cannot see it
    with pytest.raises(UserError, match="sha256"):
        open_artifact(art, verify="always")
    assert not verify_stamp.stamp_path(art).exists()
    with pytest.raises(UserError, match="sha256"):  # the stamp is gone: the default policy refuses it too
        open_artifact(art)


def test_a_file_replaced_by_a_different_copy_is_caught(art):
    """Same size and mtime as the verified file, but a new inode: re-verified, refused."""
    open_artifact(art)
    target = art / DATA
    before = target.stat()
    swap = art / "swap.tmp"
    shutil.copy2(target, swap)
    flip_byte(swap)
    os.utime(swap, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(swap, target)
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ino != before.st_ino
    with pytest.raises(UserError, match="sha256"):
        open_artifact(art)
    assert not verify_stamp.stamp_path(art).exists()


def test_a_changed_manifest_means_a_full_verification(art, hashed):
    open_artifact(art)
    text = (art / contract.MANIFEST).read_text()
    (art / contract.MANIFEST).write_text(text.rstrip() + "\n\n")  # same content, other bytes
    hashed.clear()
    again = open_artifact(art)
    assert again.verification.state == verify_stamp.VERIFIED and len(hashed) == 2
    hashed.clear()
    assert open_artifact(art).verification.state == verify_stamp.STAMPED and hashed == []


def test_a_file_added_inside_a_listed_folder_is_caught(tmp_path, cache):
    """An .mlpackage is a listed folder: the stamp holds every file inside it. An empty file keeps the size."""
    root = tmp_path / "coreml"
    shutil.copytree(CONFORMANCE / "vision-coreml", root)
    assert open_artifact(root).verification.state == verify_stamp.VERIFIED
    stamp = json.loads(verify_stamp.stamp_path(root).read_text())
    inside = [p for p in stamp["files"] if p.startswith("model.mlpackage/")]
    assert len(inside) >= 2 and "model.mlpackage" not in stamp["files"]
    assert open_artifact(root).verification.state == verify_stamp.STAMPED
    extra = root / "model.mlpackage" / "Data" / "extra.bin"
    extra.touch()
    with pytest.raises(UserError, match="sha256"):
        open_artifact(root)
    extra.unlink()
    assert open_artifact(root).verification.state == verify_stamp.VERIFIED
    assert open_artifact(root).verification.state == verify_stamp.STAMPED
    (root / inside[0]).unlink()  # a file removed: fewer bytes, refused by the size check
    with pytest.raises(UserError):
        open_artifact(root)
    assert not verify_stamp.stamp_path(root).exists()


def test_a_symlink_escape_is_refused_even_with_a_matching_stamp(art, tmp_path):
    """Moving a listed file out and linking to it keeps its stat (stat follows links): the inside check catches it."""
    open_artifact(art)
    moved = tmp_path / "moved-out"
    shutil.move(art / DATA, moved)
    (art / DATA).symlink_to(moved)
    with pytest.raises(UserError, match="outside the artifact folder"):
        open_artifact(art)


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"format": 1}', b"\xff\xfe", b""])
def test_a_corrupt_stamp_means_a_full_verification(art, hashed, content):
    open_artifact(art)
    verify_stamp.stamp_path(art).write_bytes(content)
    hashed.clear()
    assert open_artifact(art).verification.state == verify_stamp.VERIFIED and len(hashed) == 2
    assert json.loads(verify_stamp.stamp_path(art).read_text())["format"] == verify_stamp.FORMAT  # rewritten
    assert open_artifact(art).verification.state == verify_stamp.STAMPED


def test_a_stamp_with_wrong_stats_is_not_trusted(art, hashed):
    open_artifact(art)
    path = verify_stamp.stamp_path(art)
    stamp = json.loads(path.read_text())
    stamp["files"][DATA]["mtime_ns"] += 1
    path.write_text(json.dumps(stamp))
    hashed.clear()
    assert open_artifact(art).verification.state == verify_stamp.VERIFIED and hashed


def test_an_unwritable_cache_still_opens_with_full_verification(art, tmp_path, monkeypatch, hashed):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("x")
    monkeypatch.setenv("EDGETRIM_CACHE", str(blocked))
    artifact = open_artifact(art)
    assert artifact.verification.state == verify_stamp.VERIFIED and len(hashed) == 2
    # kept for this process only: a second open in the same run (edgetrim run opens twice) is not hashed again
    hashed.clear()
    assert open_artifact(art).verification.state == verify_stamp.STAMPED and hashed == []
    flip_byte(art / DATA)
    with pytest.raises(UserError, match="sha256"):
        open_artifact(art)


def test_a_folder_in_place_of_the_stamp_still_opens(art, hashed):
    verify_stamp.stamp_path(art).mkdir(parents=True)
    assert open_artifact(art).verification.state == verify_stamp.VERIFIED and len(hashed) == 2


# --------------------------------------------------------------------------- CLI


def rows(out: str, key: str) -> list[str]:
    """The values of a summary table's rows named ``key``."""
    cells = [[c.strip() for c in line.split("│")] for line in out.splitlines() if line.count("│") >= 3]
    return [c[2] for c in cells if c[1] == key]


def test_cli_run_shows_the_verify_row(art, sample_png, capsys, monkeypatch):
    from edgetrim.cli import render
    from edgetrim.cli.main import main

    monkeypatch.setattr(render.console, "width", 200)
    assert main(["run", str(art), "--image", str(sample_png), "--verify", "always"]) == 0
    first = rows(capsys.readouterr().out, "verify")
    assert len(first) == 1 and first[0].startswith("sha256 of 2 files (") and first[0].endswith(" ms)"), first
    assert main(["run", str(art), "--image", str(sample_png)]) == 0
    second = rows(capsys.readouterr().out, "verify")
    assert len(second) == 1 and second[0].startswith("unchanged since verified ") and second[0].endswith("(stamp)")


def test_cli_refuses_an_unknown_policy(art, sample_png, capsys):
    from edgetrim.cli.main import main

    for command in (["run", str(art), "--image", str(sample_png)], ["bench", str(art)]):
        with pytest.raises(SystemExit) as exited:
            main([*command, "--verify", "sometimes"])
        assert exited.value.code == 2
        assert "invalid choice: 'sometimes'" in capsys.readouterr().err


def test_cli_bench_takes_verify(art, tmp_path, hashed):
    from edgetrim.cli.main import main

    BenchOptions(verify="always").check(contract.VISION_ENCODER)
    BenchOptions(verify="always", onnx_load=True).check(contract.VISION_ENCODER)
    open_artifact(art)
    hashed.clear()
    out = tmp_path / "bench"
    args = ["bench", str(art), "--onnx-load", "--runs", "1", "--repeats", "1", "--out", str(out), "--verify", "always"]
    assert main(args) == 0
    assert DATA in [p.name for p in hashed]  # hashed although the stamp matched
    flip_byte(art / DATA, keep_mtime=True)  # invisible to the stamp, not to --verify always
    assert main(args) == 2
