"""One advisory lock for folders that one process writes at a time (a run folder, an index).

An exclusive, non-blocking ``flock`` on a lock file: the kernel drops it when its process
dies (even by SIGKILL), so a stale lock file never blocks a later writer. The file records
``pid PID on HOST`` so that a second process can say who holds it. Without ``fcntl``
(Windows) no lock is taken and a warning says so.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
from pathlib import Path
from typing import Callable, Optional

from vireid.errors import VireidError
from vireid.utils.atomic import OutputWriteError, describe_os_error

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class FolderLock:
    """Exclusive lock on ``path`` (a lock file inside the folder it protects).

    ``busy`` builds the error raised when another process holds the lock; it receives the
    holder's ``pid … on …`` line. Usable as a context manager or by acquire()/release().
    """

    def __init__(self, path: Path, busy: Callable[[str], VireidError]) -> None:
        self.path = Path(path)
        self.busy = busy
        self.fd: Optional[int] = None

    def acquire(self) -> "FolderLock":
        if fcntl is None:  # pragma: no cover - not POSIX
            log.warning("no fcntl: %s is not protected against a second writer", self.path.parent)
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputWriteError(f"cannot create the lock file {self.path}: "
                                   f"{describe_os_error(exc)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "pid unknown"
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputWriteError(f"cannot lock {self.path}: {describe_os_error(exc)}") from exc
            raise self.busy(holder) from None
        try:
            os.ftruncate(fd, 0)
            _write_all(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        except OSError as exc:
            os.close(fd)
            raise OutputWriteError(f"cannot write the lock file {self.path}: "
                                   f"{describe_os_error(exc)}") from exc
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
