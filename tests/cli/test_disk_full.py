"""Writes on a full or read-only disk (a small tmpfs, where this machine lets the tests mount one): one
line, exit 2, the file that was there before left as it was, no temporary file left behind."""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path

import pytest

BLOCKS = "r1_k3_s22_e1_i8_o16_se0.25"


@pytest.fixture
def tmpfs(tmp_path):
    """A 256 KiB tmpfs mounted at ``tmp_path/disk`` (needs root and a kernel that allows it)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0777", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> None:
    """Fill ``disk`` to the last byte."""
    with open(disk / "filler", "wb", buffering=0) as handle:
        for chunk in (b"\0" * 4096, b"\0"):
            try:
                while True:
                    handle.write(chunk)
            except OSError as err:
                assert err.errno == errno.ENOSPC


def _one_line(code: int, err: str, *words: str) -> None:
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def _leftovers(disk: Path) -> list[str]:
    return [p.name for p in disk.iterdir() if "tmp" in p.name]


def test_a_full_disk_save_over_a_description_keeps_the_old_file(tmpfs, cli):
    target = tmpfs / "model.json"
    code, _, _ = cli("info", "efficientnet_b0", "--save", str(target))
    assert code == 0
    before = target.read_bytes()
    assert json.loads(before)["name"] == "efficientnet_b0"
    _fill(tmpfs)
    code, out, err = cli("info", "efficientnet_b7", "--save", str(target))
    _one_line(code, err, str(target), "No space left on device")
    assert target.read_bytes() == before and not _leftovers(tmpfs)
    code, out, err = cli("scale", "--phi", "1", "--save", str(tmpfs / "new.json"))
    _one_line(code, err, "No space left on device")
    assert not (tmpfs / "new.json").exists() and not _leftovers(tmpfs)


def test_training_onto_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmpfs, cli):
    _fill(tmpfs)
    code, out, err = cli(
        "train", "--blocks", BLOCKS, "--resolution", "16", "--epochs", "1", "--batch-size", "8",
        "--max-steps-per-epoch", "1", "--recipe", "small", "--output", str(tmpfs / "run"),
    )  # fmt: skip
    _one_line(code, err, "No space left on device")
    assert not [p for p in tmpfs.rglob("*") if "tmp" in p.name]


def test_a_read_only_disk_is_one_line_and_changes_nothing(tmpfs, cli):
    target = tmpfs / "model.json"
    assert cli("info", "efficientnet_b0", "--save", str(target))[0] == 0
    before = target.read_bytes()
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], capture_output=True, text=True)
    if remounted.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only ({remounted.stderr.strip()})")
    code, _, err = cli("info", "efficientnet_b3", "--save", str(target))
    _one_line(code, err, "Read-only file system")
    assert target.read_bytes() == before
    code, _, err = cli(
        "train", "--blocks", BLOCKS, "--resolution", "16", "--epochs", "1", "--batch-size", "8",
        "--recipe", "small", "--output", str(tmpfs / "run"),
    )  # fmt: skip
    _one_line(code, err, "Read-only file system")
    code, _, err = cli("pipeline", "--output", str(tmpfs / "pipe"), "--max-points", "1")
    _one_line(code, err, "Read-only file system")
    assert sorted(p.name for p in tmpfs.iterdir()) == ["model.json"]


def test_convert_onto_a_full_disk_keeps_the_old_file(tmpfs, cli):
    """safetensors writes by file name and reports ENOSPC in its own exception: one line all the same."""
    target = tmpfs / "x.safetensors"
    target.write_bytes(b"the old file")
    _fill(tmpfs)
    code, out, err = cli("convert", "lite0-imagenet", "--to", str(target))
    _one_line(code, err, str(target), "No space left on device")
    assert target.read_bytes() == b"the old file" and not _leftovers(tmpfs)


def test_the_disk_filling_during_a_checkpoint_keeps_the_last_one_whole(tmp_path, cli):
    """Room for one checkpoint, not two: the epoch's copy fails in PyTorch's zip writer ("unexpected pos"),
    which is one line; ``last.pt`` stays whole and no temporary file is left."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=800k,mode=0777", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'})")
    try:
        code, out, err = cli(
            "train", "--blocks", BLOCKS, "--resolution", "16", "--epochs", "1", "--batch-size", "8",
            "--max-steps-per-epoch", "1", "--recipe", "small", "--output", str(disk / "run"), "--json",
        )  # fmt: skip
        _one_line(code, err, "epoch_0001.pt", "No space left on device")
        from effnet.train.checkpoint import load_checkpoint

        assert load_checkpoint(disk / "run" / "checkpoints" / "last.pt")["epoch"] == 1
        assert not [p for p in disk.rglob("*") if "tmp" in p.name]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


class _RustError(Exception):
    """As safetensors reports a failed write: the OS error only in its message."""


def _safetensors_failure(tmp: str) -> None:
    raise _RustError("Error while serializing: I/O error: No space left on device (os error 28)")


def _zip_writer_failure(handle):
    """As PyTorch's zip writer fails on a full disk: a RuntimeError whose context is the failed write."""
    failure = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 768 vs 662")
    failure.__context__ = OSError(errno.ENOSPC, "No space left on device")
    raise failure


@pytest.mark.parametrize(
    "writer",
    [
        dict(write=_zip_writer_failure),
        dict(write_path=_safetensors_failure),
    ],
    ids=["torch.save", "safetensors"],
)
def test_third_party_writers_failing_on_a_full_disk_are_one_user_error(tmp_path, writer):
    """Without a tmpfs: the writers' own ways of saying ENOSPC become one UserError, old file kept."""
    from effnet.atomic import atomic_write
    from effnet.errors import UserError

    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with pytest.raises(UserError, match="cannot write .*file.bin: No space left on device"):
        atomic_write(target, **writer)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_a_writers_own_bug_is_not_disguised_as_a_disk_error(tmp_path):
    from effnet.atomic import atomic_write

    with pytest.raises(ZeroDivisionError):
        atomic_write(tmp_path / "x", lambda handle: 1 / 0)
    assert not list(tmp_path.iterdir())
