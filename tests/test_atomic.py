"""Atomic writes: a failed write (full disk, read-only folder, a crashing writer) leaves the
previous file byte-identical, no temporary files behind, and a clear VireidError."""
from __future__ import annotations

import errno
import os
import stat

import numpy as np
import pytest
import torch

from vireid.utils import atomic
from vireid.utils.atomic import (OutputExistsError, OutputWriteError, atomic_open,
                                  atomic_path, atomic_save_torch, atomic_write_bytes,
                                  atomic_write_text)
from vireid.utils.atomic_dir import atomic_dir
from vireid.errors import VireidError

OLD = b"previous content \x00\x01\x02" * 100


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def old_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(OLD)
    return path


def _assert_untouched(path):
    assert path.read_bytes() == OLD
    assert _listing(path.parent) == [path.name], "a temporary file was left behind"


# ------------------------------------------------------------------ successful writes
def test_writes_replace_content_and_leave_no_temp(tmp_path):
    p = tmp_path / "sub" / "a.txt"  # parent folder is created
    atomic_write_text(p, "héllo\n")
    assert p.read_bytes() == "héllo\n".encode("utf-8")
    atomic_write_bytes(p, b"\x00" * 3_000_000)  # larger than one write() call may take
    assert p.read_bytes() == b"\x00" * 3_000_000
    assert _listing(p.parent) == ["a.txt"]


def test_new_file_gets_umask_permissions_not_mkstemp_0600(tmp_path):
    # mkstemp would give 0o600; outputs should be readable like any file open() creates.
    old = os.umask(0o022)
    try:
        p = atomic_write_bytes(tmp_path / "x", b"1")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_atomic_save_torch_roundtrip(tmp_path):
    obj = {"w": torch.arange(6.0).reshape(2, 3), "n": 3}
    p = atomic_save_torch(obj, tmp_path / "ck.pt")
    back = torch.load(p, weights_only=True)
    assert torch.equal(back["w"], obj["w"]) and back["n"] == 3
    assert _listing(tmp_path) == ["ck.pt"]


def test_atomic_path_keeps_suffix_for_writers_that_append_one(tmp_path):
    target = tmp_path / "feat.npy"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".npy" and tmp.exists()
        np.save(tmp, np.arange(4))  # np.save adds ".npy" unless the name already ends so
    assert np.load(target).tolist() == [0, 1, 2, 3]
    assert _listing(tmp_path) == ["feat.npy"]


# ------------------------------------------------------------------ failures midway
def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_midway_keeps_previous_file(old_file, monkeypatch):
    seen = {}

    def half_then_full(fh, data):  # the disk fills up after half of the data
        fh.write(data[: len(data) // 2])
        fh.flush()
        seen["tmp"] = fh.name
        _enospc()

    monkeypatch.setattr(atomic, "_write_all", half_then_full)
    with pytest.raises(OutputWriteError) as ei:
        atomic_write_bytes(old_file, b"N" * 10_000)
    msg = str(ei.value)
    assert str(old_file) in msg and "no space left" in msg and "ENOSPC" in msg
    assert isinstance(ei.value, VireidError)
    assert not os.path.exists(seen["tmp"])
    _assert_untouched(old_file)


def test_torch_save_disk_full_midway(old_file, monkeypatch):
    def partial_save(obj, fh, *a, **k):
        fh.write(b"PK\x03\x04 partial zip")
        _enospc()

    monkeypatch.setattr(torch, "save", partial_save)
    with pytest.raises(OutputWriteError, match="no space left"):
        atomic_save_torch({"a": 1}, old_file)
    _assert_untouched(old_file)


def test_fsync_failure_keeps_previous_file(old_file, monkeypatch):
    # fsync is where delayed-allocation file systems (and NFS) report a full disk.
    monkeypatch.setattr(atomic.os, "fsync", _enospc)
    with pytest.raises(OutputWriteError, match="ENOSPC"):
        atomic_write_text(old_file, "new")
    _assert_untouched(old_file)


def test_non_os_error_in_writer_propagates_unchanged(old_file):
    with pytest.raises(ZeroDivisionError):
        with atomic_open(old_file, "wb") as fh:
            fh.write(b"half")
            1 / 0
    _assert_untouched(old_file)


# ------------------------------------------------------------------ read-only folder
def _chmod_blocks_writes(folder) -> bool:
    """False when running as root (or on file systems ignoring modes), where 0o555 does not
    stop writes: then the read-only case is simulated instead."""
    probe = folder / ".probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return True
    probe.unlink()
    return False


def test_read_only_folder_gives_clear_error(old_file, monkeypatch):
    folder = old_file.parent
    folder.chmod(0o555)
    try:
        if not _chmod_blocks_writes(folder):
            real_open = os.open

            def erofs_open(p, flags, *a, **k):
                if flags & os.O_CREAT:
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(p))
                return real_open(p, flags, *a, **k)

            monkeypatch.setattr(atomic.os, "open", erofs_open)
            expected = "read-only file system"
        else:
            expected = "permission denied"
        with pytest.raises(OutputWriteError) as ei:
            atomic_write_text(old_file, "new content")
        assert str(old_file) in str(ei.value) and expected in str(ei.value)
        monkeypatch.undo()
        _assert_untouched(old_file)
    finally:
        folder.chmod(0o755)


def test_rename_refused_keeps_previous_file_and_removes_temp(old_file, monkeypatch):
    # The file system turns read-only between writing the temp file and the rename.
    def erofs_replace(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(atomic.os, "replace", erofs_replace)
    with pytest.raises(OutputWriteError, match="read-only file system"):
        atomic_write_bytes(old_file, b"new")
    monkeypatch.undo()
    _assert_untouched(old_file)


# ------------------------------------------------------------------ whole folders
def test_atomic_dir_refuses_non_empty_folder_unless_overwrite(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        with atomic_dir(out):
            raise AssertionError("body must not run")
    assert _listing(out) == ["old.txt"]
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _listing(out) == ["new.txt"]
    assert _listing(tmp_path) == ["export"]  # no temp or backup folder left


def test_atomic_dir_accepts_empty_or_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    for name in ("empty", "missing"):
        with atomic_dir(tmp_path / name) as tmp:
            (tmp / "f").write_bytes(b"x")
        assert (tmp_path / name / "f").read_bytes() == b"x"
    assert _listing(tmp_path) == ["empty", "missing"]


def test_atomic_dir_failure_keeps_previous_folder(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputWriteError, match="no space left"):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "part.bin").write_bytes(b"half")
            _enospc()
    assert _listing(out) == ["old.txt"] and (out / "old.txt").read_text() == "old"
    assert _listing(tmp_path) == ["export"]


def test_atomic_dir_refuses_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(OutputExistsError, match="found a file"):
        with atomic_dir(f, overwrite=True):
            pass
