"""Whole output folders written atomically: built in a temporary folder beside the target and
renamed (or merged) into place at the end.

A crash leaves only that temporary folder; its name carries the host and process id of its
writer, and the next :func:`atomic_dir` for the same target removes the ones whose process
has gone (:func:`remove_stale_temps`). Clean-up goes through
:func:`vireid.utils.atomic.remove_tree`, which survives a second Ctrl-C.

Public API::

    atomic_dir(path, overwrite=False, *, merge=False, stale=(), last=(), sync=True)
                                      context manager -> temp folder, renamed (or merged) into place
    remove_stale_temps(path)          temp folders of `path` whose writer has gone -> removed
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import socket
from collections.abc import Collection, Iterator
from pathlib import Path

from vireid.utils.atomic import (PathLike, _fsync_file, _is_empty_dir, _write_error,
                                 check_output_dir, fsync_dir, remove_tree, removed_on_failure)

log = logging.getLogger(__name__)


def _host_tag() -> str:
    """4 hex digits of this machine's name: a temp folder's writer is known only on its host."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:4]


def _side_name(path: Path, kind: str) -> Path:
    """``.NAME.HOST-PID-RANDOM.tmp`` (or ``.old``) beside ``path``: hidden, unique, and
    naming its writer so that a leftover of a process that has gone can be recognised."""
    return path.parent / f".{path.name}.{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}.{kind}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def remove_stale_temps(path: PathLike) -> list[Path]:
    """Remove the temp and backup folders that :func:`atomic_dir` left beside ``path`` in a
    process that has gone (SIGKILL, a power cut); returns them. Only leftovers written on
    this host whose process no longer exists are removed: another host's, or a running
    writer's, are left alone."""
    path = Path(path)
    pattern = re.compile(r"^\." + re.escape(path.name)
                         + r"\.(?P<host>[0-9a-f]{4})-(?P<pid>\d+)-[0-9a-f]{8}\.(?P<kind>tmp|old)$")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    host = _host_tag()
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or m["host"] != host or _pid_alive(int(m["pid"])):
            continue
        if m["kind"] == "old" and not path.exists():
            continue  # killed between its two renames: the previous output is all there is
        log.info("removing %s, left by an interrupted writer (process %s)", entry.path, m["pid"])
        remove_tree(entry.path)
        removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_dir(path: PathLike, overwrite: bool = False, *, merge: bool = False,
               stale: Collection[str] = (), last: Collection[str] = (),
               sync: bool = True) -> Iterator[Path]:
    """Build a whole output folder in a temp folder next to ``path``, then move it into place.

    An existing non-empty folder is refused unless ``overwrite`` (checked before the body
    runs, so no work is wasted). With ``overwrite`` the old folder is first renamed aside and
    deleted only after the new one is in place; should the final rename fail, the old folder
    is renamed back. Files written into the yielded folder should be complete when the block
    ends (each is fsynced here before the rename).

    With ``merge`` (for outputs that share a folder with other files: ``--overwrite`` removes
    only what the command itself writes), an existing non-empty folder is not replaced: each
    file of the new folder is moved into it (``os.replace``, replacing a file of the same
    relative name), the names in ``last`` after all others (a manifest that commits the
    rest), the relative names in ``stale`` (files an earlier run of the command wrote that
    this one does not) are removed, and every other file stays. An interrupt during the moves
    leaves some files new and some old, with the previous ``last`` file.

    ``sync=False`` skips the fsync of every file (for outputs that are cheap to make again,
    such as a generated dataset of thousands of images).

    On an error or Ctrl-C only the temp folder exists, and it is removed by
    :func:`remove_tree` (which survives a second Ctrl-C); a temp folder that a killed process
    left is removed by the next call for the same ``path`` (:func:`remove_stale_temps`).

    Raises:
        OutputExistsError: see :func:`check_output_dir`.
        OutputWriteError: an OSError on the way; the temp folder is removed and ``path``
            is unchanged (with ``merge``: unless the OSError came during the moves).
    """
    path = Path(path)
    check_output_dir(path, overwrite)
    remove_stale_temps(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _side_name(path, "tmp")
        tmp.mkdir()
    except OSError as exc:
        raise _write_error(path, exc, "folder") from exc
    with removed_on_failure(tmp, path, "folder"):
        yield tmp
        if sync:
            for f in sorted(tmp.rglob("*")):
                if f.is_file():
                    _fsync_file(f)
            fsync_dir(tmp)
        if merge and path.is_dir() and not _is_empty_dir(path):
            _merge_dir_into_place(tmp, path, stale, last)
        else:
            _move_dir_into_place(tmp, path, overwrite)
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
    old = _side_name(path, "old")
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)  # put the previous output back
        raise
    remove_tree(old)


def _plain_relative(name: str) -> bool:
    """A relative name inside a folder: no absolute path, no ``..``, no empty part."""
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def _merge_dir_into_place(tmp: Path, path: Path, stale: Collection[str],
                          last: Collection[str]) -> None:
    files = [f for f in sorted(tmp.rglob("*")) if f.is_file() or f.is_symlink()]
    files.sort(key=lambda f: f.relative_to(tmp).as_posix() in last)  # stable: `last` ones last
    written = {f.relative_to(tmp).as_posix() for f in files}
    for name in stale:
        if not _plain_relative(name) or name in written:
            continue
        old = path / name
        if old.is_symlink() or old.is_file():
            old.unlink()
    for f in files:
        dest = path / f.relative_to(tmp)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)
    fsync_dir(path)
    remove_tree(tmp)
