"""Atomic file and folder writes: a reader sees the old output or the new one, never half of one.

Every output of vireid (checkpoints, logs, feature files, indexes, exported models) is written
to a temporary file in the *same* folder, flushed and fsynced, then moved over the target with
``os.replace`` (atomic on POSIX and Windows within one file system), and the folder is fsynced
so that the rename itself survives a power cut. If anything fails on the way — a full disk
(ENOSPC), a read-only file system (EROFS), a permission error, or an exception in the caller's
writer — the temporary file is removed and the previous file is left byte-identical.

Where a write goes (:func:`output_target`):

* a symbolic link (or a chain of them) is followed and its final target is written
  atomically; the link itself stays a link (a dangling link creates its target);
* a standard stream — ``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``, ``/proc/PID/fd/N`` or a
  link to one — and an existing target that is neither a regular file nor a folder (a FIFO, a
  terminal, ``/dev/null``, a socket) is written *in place*: opened for appending, never
  replaced, truncated or renamed over (so such a write cannot be atomic).

Interrupts: the clean-up of a temporary file or folder after an error or Ctrl-C runs to the
end even when a second Ctrl-C arrives (:func:`remove_tree`: SIGINT is ignored while it runs,
and a KeyboardInterrupt raised anyway restarts the removal instead of abandoning it). Whole
folders: :mod:`vireid.utils.atomic_dir`.

OS errors are re-raised as :class:`OutputWriteError` (a :class:`~vireid.errors.VireidError`,
so the CLI prints one ``error: …`` line and exits 2) naming the path and the OS's reason.
Other exceptions (bugs, KeyboardInterrupt) propagate unchanged after the same cleanup.

Public API::

    output_target(path)               -> (Path to write, written in place?)
    atomic_path(path)                 context manager -> temp Path to write to by name
    atomic_open(path, mode="wb")      context manager -> open file object
    atomic_write_bytes(path, data)    -> Path
    atomic_write_text(path, text)     -> Path
    atomic_save_torch(obj, path)      -> Path
    remove_tree(path)                 removal that survives a second Ctrl-C
    undo_new_folders(path)            context manager: folders it created go on an error
    note_file_written()               the test hook of many-file writers (below)

Test hooks (environment variables, read at each call; for tests that interrupt a writer
deterministically, from inside, instead of sending a signal at a guessed moment):

* ``VIREID_TEST_INTERRUPT_AFTER_FILES=N``: :func:`note_file_written`, which every atomic
  file write and every many-file writer (synthetic images, ONNX files) calls after a file is
  complete, raises KeyboardInterrupt when this process has written its N-th file (the main
  process only: pool workers never raise);
* ``VIREID_TEST_INTERRUPT_IN_CLEANUP=1``: :func:`remove_tree` raises one KeyboardInterrupt
  after removing its first entry, as a second Ctrl-C in the middle of the clean-up would.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import multiprocessing
import os
import re
import secrets
import signal
import stat
import sys
import threading
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


# --------------------------------------------------------------------------- where a write goes
#: Folders whose entries are the process's standard streams (or devices): written in place.
_STREAM_DIRS = re.compile(r"^/(dev|dev/fd|proc/(self|thread-self|\d+)/fd)$")
#: Names of this process's own descriptors: dup'ed instead of re-opened (re-opening
#: /proc/self/fd/N fails for a socket and would start a pipe or file at another offset).
_OWN_FD = re.compile(r"^/(dev/(?P<stream>stdout|stderr)|dev/fd/(?P<fd>\d+)"
                     r"|proc/(?P<pid>self|thread-self|\d+)/fd/(?P<pfd>\d+))$")


def output_target(path: PathLike) -> tuple[Path, bool]:
    """Where a write to ``path`` goes: ``(target, in_place)``.

    A symbolic link (chain) is followed: ``target`` is the file it finally names, written
    atomically like any regular file (the link stays). ``in_place`` is true for a standard
    stream (``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``, ``/proc/PID/fd/N``, anything
    directly in ``/dev``, or a link to one of them) and for an existing target that is neither
    a regular file nor a folder (a FIFO, a character device, a socket); ``target`` is then
    the stream's name (``/dev/stdout`` for a link to it) or ``path`` itself, to be opened and
    written as it is, never replaced.

    Raises:
        OutputWriteError: a loop of symbolic links.
    """
    given = Path(path)
    hop = Path(os.path.abspath(os.fspath(path)))
    for _ in range(40):  # the kernel's own limit on links in a path
        if os.name == "posix" and _STREAM_DIRS.match(hop.parent.as_posix()):
            return hop, True  # e.g. /dev/stdout, also when reached through a link
        if not hop.is_symlink():
            break
        link = os.readlink(hop)
        hop = Path(os.path.normpath(os.path.join(os.path.realpath(hop.parent), link)))
    else:
        raise _write_error(given, OSError(errno.ELOOP, os.strerror(errno.ELOOP)))
    # Only a link in the last component needs resolving: a temp file made through a linked
    # folder already lies in the real folder, beside the target (and messages keep the name
    # the user gave).
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    try:
        mode = os.stat(target).st_mode
    except OSError:  # nothing there yet (or a dangling link): a new regular file
        return target, False
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return target, False
    return given, True


def _own_descriptor(path: Path) -> int | None:
    """The descriptor number of this process that ``path`` names (/dev/stdout → 1,
    /dev/fd/N and /proc/self/fd/N → N), or None."""
    m = _OWN_FD.match(os.path.abspath(os.fspath(path)))
    if m is None:
        return None
    if m["stream"]:
        return 1 if m["stream"] == "stdout" else 2
    if m["pid"] not in (None, "self", "thread-self", str(os.getpid())):
        return None  # another process's descriptor: open it by name
    return int(m["fd"] or m["pfd"])


@contextlib.contextmanager
def _open_in_place(path: Path, mode: str, encoding: str | None) -> Iterator[IO[Any]]:
    """Append to a stream or device at ``path`` (see :func:`output_target`)."""
    for stream in (sys.stdout, sys.stderr):  # keep what was printed before it in order
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    own = _own_descriptor(path)
    try:
        fd = os.dup(own) if own is not None else os.open(path, os.O_WRONLY | os.O_APPEND)
        fh = os.fdopen(fd, mode, encoding=encoding)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        with fh:
            yield fh
            fh.flush()
    except OSError as exc:
        raise _write_error(path, exc) from exc


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


# --------------------------------------------------------------------------- interrupts
#: Test hooks (see the module docstring).
ENV_INTERRUPT_AFTER_FILES = "VIREID_TEST_INTERRUPT_AFTER_FILES"
ENV_INTERRUPT_IN_CLEANUP = "VIREID_TEST_INTERRUPT_IN_CLEANUP"
_hook_state = {"files": 0, "cleanup_fired": False}


def note_file_written() -> None:
    """Count one complete output file; the test hook ``VIREID_TEST_INTERRUPT_AFTER_FILES=N``
    raises KeyboardInterrupt at this process's N-th file (never in a pool worker, where a
    KeyboardInterrupt would kill the worker instead of reaching the command)."""
    limit = os.environ.get(ENV_INTERRUPT_AFTER_FILES)
    if not limit or multiprocessing.parent_process() is not None:
        return
    _hook_state["files"] += 1
    if _hook_state["files"] == int(limit):
        raise KeyboardInterrupt(f"test hook {ENV_INTERRUPT_AFTER_FILES}={limit}")


def _cleanup_hook() -> None:
    if os.environ.get(ENV_INTERRUPT_IN_CLEANUP) and not _hook_state["cleanup_fired"]:
        _hook_state["cleanup_fired"] = True
        raise KeyboardInterrupt(f"test hook {ENV_INTERRUPT_IN_CLEANUP}")


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT meanwhile (only the main thread may change signal handlers; elsewhere,
    and where the previous handler was not set from Python, nothing is changed)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGINT) is not None:
                previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except (ValueError, OSError):
            previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _remove_entries(path: Path) -> None:
    """Remove ``path`` (a file, a link or a folder tree) entry by entry, deepest first."""
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        _cleanup_hook()
        return
    for folder, dirs, files in os.walk(path, topdown=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            try:
                os.unlink(os.path.join(folder, name))
            except FileNotFoundError:
                pass
            _cleanup_hook()
        for name in dirs:
            sub = os.path.join(folder, name)
            if not os.path.islink(sub):
                try:
                    os.rmdir(sub)
                except FileNotFoundError:
                    pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def remove_tree(path: PathLike) -> None:
    """Remove a file, link or folder tree and finish even through Ctrl-C.

    SIGINT is ignored while the removal runs, and a KeyboardInterrupt raised anyway (one
    already pending when it began, or the test hook) restarts the removal instead of
    abandoning it half-way; the caller is leaving because of an error or a first Ctrl-C and
    re-raises that. An OSError (a folder gone read-only) is logged: nothing more can be done.
    """
    path = Path(path)
    with _sigint_ignored():
        for _ in range(100):
            try:
                _remove_entries(path)
                return
            except KeyboardInterrupt:
                log.warning("interrupted again while removing %s; finishing the clean-up first",
                            path)
            except OSError as exc:
                log.warning("could not remove temporary %s: %s", path, exc)
                return


@contextlib.contextmanager
def undo_new_folders(path: PathLike) -> Iterator[Path]:
    """On an error or Ctrl-C in the block, remove ``path`` and its parents that did not exist
    when the block began, if they hold no file by then (empty folders inside a new ``path``
    go too): a command that writes its files through :func:`atomic_dir` then leaves no empty
    folder either. SIGINT is ignored meanwhile."""
    path = Path(path)
    new: list[Path] = []
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        new.append(probe)
        probe = probe.parent
    try:
        yield path
    except BaseException:
        with _sigint_ignored():
            if new and os.path.isdir(path) and not os.path.islink(path):
                for folder, _, _ in os.walk(path, topdown=False):
                    if folder != os.fspath(path):
                        with contextlib.suppress(OSError):
                            os.rmdir(folder)  # only an empty one goes
            for folder in new:  # deepest first
                try:
                    folder.rmdir()
                except OSError:  # not empty (someone else's files), or already gone
                    break
        raise


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The temporary file is created empty (mode 0o666 minus the umask, like ``open``) before
    the body runs, so the caller may write it by name with any writer (``np.save``,
    ``faiss.write_index``, ``torch.onnx.export``…). A symbolic link is followed and its
    target replaced; a stream or device (:func:`output_target`) is yielded as it is, for the
    writer to write in place.

    Raises:
        OutputWriteError: an OSError while creating, writing, syncing or renaming; the temp
            file is gone and ``path`` is unchanged.
    """
    path, in_place = output_target(path)
    if in_place:  # a stream or device: the writer writes it by name, nothing to replace
        yield path
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_name(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    with removed_on_failure(tmp, path):
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    fsync_dir(path.parent)
    note_file_written()


@contextlib.contextmanager
def removed_on_failure(tmp: Path, path: Path, what: str = "file") -> Iterator[None]:
    """Remove ``tmp`` (with :func:`remove_tree`, through a second Ctrl-C) when the block
    fails; an OSError becomes :class:`OutputWriteError` naming ``path``, other exceptions
    propagate unchanged. Shared by the file and the folder writers."""
    try:
        yield
    except OSError as exc:
        err = _write_error(path, exc, what)  # before the clean-up frees the space it looks at
        remove_tree(tmp)
        raise err from exc
    except BaseException:
        remove_tree(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """``open`` for writing, atomically: the file appears at ``path`` only once the block
    ends without an exception. ``mode`` is ``"wb"`` or ``"w"`` (text; ``encoding`` defaults
    to UTF-8). A stream or device (``/dev/stdout``, a FIFO; :func:`output_target`) is opened
    for appending and written in place."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    target, in_place = output_target(path)
    if in_place:
        with _open_in_place(target, mode, encoding) as fh:
            yield fh
        return
    with atomic_path(target) as tmp:
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
