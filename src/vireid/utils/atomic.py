"""Atomic file and folder writes: a reader sees the old output or the new one, never half of one.

Every output of vireid (checkpoints, logs, feature files, indexes, exported models) is written
to a temporary file in the *same* folder, flushed and fsynced, then moved over the target with
``os.replace`` (atomic on POSIX and Windows within one file system), and the folder is fsynced
so that the rename itself survives a power cut. If anything fails on the way — a full disk
(ENOSPC), a read-only file system (EROFS), a permission error, or an exception in the caller's
writer — the temporary file is removed and the previous file is left byte-identical.

OS errors are re-raised as :class:`OutputWriteError` (a :class:`~vireid.errors.VireidError`,
so the CLI prints one ``error: …`` line and exits 2) naming the path and the OS's reason.
Other exceptions (bugs, KeyboardInterrupt) propagate unchanged after the same cleanup.

Public API::

    atomic_path(path)                 context manager -> temp Path to write to by name
    atomic_open(path, mode="wb")      context manager -> open file object
    atomic_write_bytes(path, data)    -> Path
    atomic_write_text(path, text)     -> Path
    atomic_save_torch(obj, path)      -> Path
    atomic_dir(path, overwrite=False) context manager -> temp folder, renamed into place
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Union

from vireid.errors import VireidError

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Marker in the names of temporary files and folders (tests and clean-up tools look for it).
TMP_MARK = ".tmp"


class OutputWriteError(VireidError):
    """An output file or folder could not be written (disk full, read-only, no permission…).

    The previous version of the output, if any, is intact.
    """


class OutputExistsError(VireidError):
    """An output folder already holds files and the caller did not allow overwriting them."""


_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
if hasattr(errno, "EDQUOT"):  # not defined on every platform
    _REASONS[errno.EDQUOT] = "disk quota exceeded"


def describe_os_error(exc: OSError) -> str:
    """"read-only file system (EROFS)": the reason of an OSError in lower case (it goes in
    the middle of a sentence), with the errno name when there is one."""
    code = exc.errno
    name = errno.errorcode.get(code, "") if code is not None else ""
    reason = _REASONS.get(code) or exc.strerror or str(exc)  # type: ignore[arg-type]
    reason = reason[:1].lower() + reason[1:]
    return f"{reason} ({name})" if name else reason


def _disk_full(folder: Path) -> bool:
    """Whether the file system of ``folder`` (or its nearest existing parent) is full."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def _write_error(path: Path, exc: OSError, what: str = "file") -> OutputWriteError:
    reason = describe_os_error(exc)
    if exc.errno is None and _disk_full(path.parent):
        # Some writers (numpy's tofile: "20480 requested and 16352 written") report a short
        # write without an errno; on a full file system that is ENOSPC, so say so.
        reason = f"{_REASONS[errno.ENOSPC]} (ENOSPC; {reason})"
    return OutputWriteError(
        f"cannot write {what} {path}: {reason}; nothing was changed there "
        f"(the previous {what}, if any, is intact)")


def _tmp_name(path: Path) -> Path:
    # Hidden, unique, and ending with the target's suffix: some writers (np.save) append
    # their own extension when the name lacks it, which would write to a different file.
    return path.parent / f".{path.name}.{secrets.token_hex(4)}{TMP_MARK}{path.suffix}"


def fsync_dir(folder: PathLike) -> None:
    """fsync a folder so a rename inside it is durable. Best effort: some platforms and file
    systems (Windows, some network mounts) cannot open or fsync a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:  # e.g. the folder went read-only meanwhile; nothing more to do
        log.warning("could not remove temporary %s: %s", path, exc)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The temporary file is created empty (mode 0o666 minus the umask, like ``open``) before
    the body runs, so the caller may write it by name with any writer (``np.save``,
    ``faiss.write_index``, ``torch.onnx.export``…).

    Raises:
        OutputWriteError: an OSError while creating, writing, syncing or renaming; the temp
            file is gone and ``path`` is unchanged.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_name(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        err = _write_error(path, exc)  # before the clean-up frees the space it looks at
        _remove_quietly(tmp)
        raise err from exc
    except BaseException:
        _remove_quietly(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """``open`` for writing, atomically: the file appears at ``path`` only once the block
    ends without an exception. ``mode`` is ``"wb"`` or ``"w"`` (text; ``encoding`` defaults
    to UTF-8)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()


def _write_all(fh: IO[bytes], data: bytes) -> None:
    """Write ``data`` completely (a separate function so tests can make it fail midway)."""
    view = memoryview(data)
    while view:
        n = fh.write(view)
        view = view[n:]


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``Path(path)``."""
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        _write_all(fh, bytes(data))
    return path


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``Path(path)``."""
    return atomic_write_bytes(path, text.encode(encoding))


#: Test hook: with this environment variable set to N, a :func:`atomic_save_torch` sends
#: its own process a real SIGINT once N bytes of the file are written, i.e. a Ctrl-C that
#: surely lands mid-write (tests/test_cli_reliability.py). Unset, nothing happens.
SIGINT_AFTER_BYTES_ENV = "VIREID_TEST_SIGINT_AFTER_BYTES"


def _sigint_after_bytes() -> int | None:
    text = os.environ.get(SIGINT_AFTER_BYTES_ENV, "").strip()
    return int(text) if text.isdigit() else None


class _RecordingWriter:
    """A file object for ``torch.save`` that remembers the first exception its ``write`` raised.

    torch's zip writer calls ``write`` from C++ and turns any exception there into its own
    ``RuntimeError: [enforce fail at inline_container.cc…] unexpected pos …``, losing the
    cause: a full disk (ENOSPC) or a Ctrl-C (KeyboardInterrupt, delivered while Python code
    runs, i.e. inside this ``write``). Recording it lets :func:`atomic_save_torch` re-raise
    the real cause. ``sigint_after``: see :data:`SIGINT_AFTER_BYTES_ENV`.
    """

    def __init__(self, fh: IO[bytes], sigint_after: int | None = None):
        self._fh = fh
        self.error: BaseException | None = None
        self._sigint_after = sigint_after
        self._written = 0

    def write(self, data: Any) -> int:
        try:
            n = self._fh.write(data)
            self._written += n
            if self._sigint_after is not None and self._written >= self._sigint_after:
                self._sigint_after = None  # once
                # raise_signal runs the Python handler before it returns: the
                # KeyboardInterrupt surfaces here, as a real Ctrl-C during a write would.
                signal.raise_signal(signal.SIGINT)
            return n
        except BaseException as exc:
            if self.error is None:
                self.error = exc
            raise

    def flush(self) -> None:
        self._fh.flush()


def atomic_save_torch(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj, path)`` atomically; returns ``Path(path)``.

    Raises:
        OutputWriteError: the file could not be written (e.g. ENOSPC, named in the message),
            also when torch reports it only as an ``inline_container`` RuntimeError; the
            temp file is removed and the previous file is intact.
        KeyboardInterrupt: Ctrl-C during the write, after the same clean-up.
    """
    import torch  # late: this module is also used by torch-free code paths

    path = Path(path)
    with atomic_open(path, "wb") as fh:
        writer = _RecordingWriter(fh, _sigint_after_bytes())
        try:
            torch.save(obj, writer)
        except BaseException as exc:
            cause = writer.error
            if cause is not None and cause is not exc:
                # Re-raise the real cause; atomic_path removes the temp file and turns an
                # OSError into OutputWriteError naming the path and the errno.
                raise cause from None
            raise
    return path


def _is_empty_dir(path: Path) -> bool:
    with os.scandir(path) as it:
        return next(it, None) is None


def check_output_dir(path: PathLike, overwrite: bool = False) -> None:
    """Refuse an output folder that already holds files, unless ``overwrite``.

    Raises:
        OutputExistsError: ``path`` is a non-empty folder and ``overwrite`` is false, or
            ``path`` exists and is not a folder.
    """
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise OutputExistsError(f"output folder {path}: expected a folder (or nothing), found a file")
    if not overwrite and not _is_empty_dir(path):
        raise OutputExistsError(f"output folder {path} already exists and is not empty; "
                                f"choose another folder or pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_dir(path: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a whole output folder in a temp folder next to ``path``, then move it into place.

    An existing non-empty folder is refused unless ``overwrite`` (checked before the body
    runs, so no work is wasted). With ``overwrite`` the old folder is first renamed aside and
    deleted only after the new one is in place; should the final rename fail, the old folder
    is renamed back. Files written into the yielded folder should be complete when the block
    ends (each is fsynced here before the rename).

    Raises:
        OutputExistsError: see :func:`check_output_dir`.
        OutputWriteError: an OSError on the way; the temp folder is removed and ``path``
            is unchanged.
    """
    path = Path(path)
    check_output_dir(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TMP_MARK}"
        tmp.mkdir()
    except OSError as exc:
        raise _write_error(path, exc, "folder") from exc
    try:
        yield tmp
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                _fsync_file(f)
        fsync_dir(tmp)
        _move_dir_into_place(tmp, path, overwrite)
    except OSError as exc:
        err = _write_error(path, exc, "folder")
        _remove_quietly(tmp)
        raise err from exc
    except BaseException:
        _remove_quietly(tmp)
        raise
    fsync_dir(path.parent)


def _move_dir_into_place(tmp: Path, path: Path, overwrite: bool) -> None:
    if not path.exists():
        os.replace(tmp, path)
        return
    # Re-check: the folder may have been filled by someone else since check_output_dir.
    check_output_dir(path, overwrite)
    if _is_empty_dir(path):
        os.replace(tmp, path)  # rename(2) may replace an empty folder
        return
    old = path.parent / f".{path.name}.{secrets.token_hex(4)}.old"
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)  # put the previous output back
        raise
    _remove_quietly(old)
