"""Argument checks shared by the commands: run before any long work starts.

Each raises :class:`~vireid.errors.ConfigError` (or returns an argparse type that argparse
reports as one ``error:`` line), naming the option, what it expects and what it found.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Optional

from ..config import MAX_THREADS, SEED_LIMIT
from ..errors import ConfigError
from ..utils.atomic import OutputWriteError, atomic_write_text, output_target
from ..utils.messages import echo

#: The output name that means standard output (``--json -``), as the ecosystem's tools read it.
STDOUT = "-"


def _int_type(expected: str, ok: Callable[[int], bool]) -> Callable[[str], int]:
    """An argparse ``type`` for an integer that ``ok`` accepts; ``expected`` words both the
    message and the type's name (what argparse shows)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, found {echo(text)}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, found {echo(value)}")
        return value
    parse.__name__ = expected.removeprefix("an ")
    return parse


def int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse ``type`` for an integer ≥ ``lo``."""
    return _int_type(f"an integer ≥ {lo}", lambda v: v >= lo)


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse ``type`` for an integer in ``lo..hi``."""
    return _int_type(f"an integer in {lo}..{hi}", lambda v: lo <= v <= hi)


#: ``--threads``: the range of ``train.threads`` (config.MAX_THREADS).
threads_type = int_in(1, MAX_THREADS)
#: ``--seed`` of a training or of random picks: the range of ``train.seed`` (config.SEED_LIMIT).
seed_type = int_in(0, SEED_LIMIT - 1)


def unit_interval(text: str) -> float:
    """argparse type: a number in [0, 1] (a weight: k-reciprocal lambda, fusion weight)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], found {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], found {value:g}")
    return value


def check_device(device: str, option: str = "--device") -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` (the GPU must exist), checked by the library's rule
    (:func:`vireid.utils.runtime.resolve_device`). Returns ``device`` unchanged."""
    # late: the rule lives with torch, and importing torch at registration would slow
    # `vireid --help` by about 1.7 s (measured)
    # late: keeps `vireid --help` fast (the library imports torch, ~1.7 s)
    from ..utils.runtime import resolve_device

    resolve_device(device, option)
    return device


def is_stdout(path: Optional[str]) -> bool:
    """Whether an output option names standard output (``-``)."""
    return path == STDOUT


def write_text_output(path: str, text: str) -> None:
    """``text`` to standard output for ``-``, else to the file ``path`` atomically (a
    symbolic link's target is written; a FIFO or ``/dev/stdout`` in place)."""
    if is_stdout(path):
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    else:
        atomic_write_text(path, text)


def check_output_file(path: Optional[str], option: str, stdout_ok: bool = False) -> None:
    """Refuse an output file path that cannot be written, before the work that fills it:
    an existing folder, a parent that is a file, or a parent folder without write access
    (the parent is created here when missing). ``-`` (standard output) is accepted where
    ``stdout_ok``, else refused. A symbolic link is judged by its target; a stream or device
    (``/dev/stdout``, a FIFO) by its own write permission."""
    if not path:
        return
    if is_stdout(path):
        if stdout_ok:
            return
        raise ConfigError(f"{option} -: expected a file path, found '-' (standard output "
                          f"is not supported for this output)")
    target, in_place = output_target(path)
    if in_place:
        if not os.access(target, os.W_OK):
            raise OutputWriteError(f"{option} {path}: expected a writable stream or device, "
                                   f"found one without write permission")
        return
    p = target
    if p.is_dir():
        raise ConfigError(f"{option} {path}: expected a file path, found a folder")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{option} {path}: expected a folder at {parent}, found a file")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"{option} {path}: cannot create the folder {parent}: "
                               f"{exc.strerror or exc}") from exc
    if not os.access(parent, os.W_OK):
        raise OutputWriteError(f"{option} {path}: expected a writable folder at {parent}, "
                               f"found one without write permission")


def check_output_folder(path: Optional[str], option: str) -> None:
    """Refuse an output folder that is a file, or whose place cannot be written."""
    if not path:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{option} {path}: expected a folder (or a new name), found a file")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{option} {path}: expected a folder at {probe}, found a file")
    if not os.access(probe, os.W_OK):
        raise OutputWriteError(f"{option} {path}: expected a writable place, found {probe} "
                               f"without write permission")


class RegistryChoices:
    """The names of a registry as argparse ``choices``, looked up only when argparse checks
    a value or prints help, so building the parser (``vireid --help``) imports neither the
    registry's module nor torch. ``target`` is ``"module:ATTRIBUTE"``; ``extra`` names
    accepted beside the registered ones (``all``).

    Give the argument an explicit ``metavar`` and put ``%(choices)s`` in its help: argparse
    would otherwise list the choices when the argument is added.
    """

    def __init__(self, target: str, extra: tuple[str, ...] = ()) -> None:
        self.target = target
        self.extra = tuple(extra)

    def _names(self) -> list[str]:
        import importlib  # late: the registry's module imports torch (see the class docstring)

        module, attr = self.target.split(":")
        return [*getattr(importlib.import_module(module), attr).names(), *self.extra]

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return ", ".join(self._names())
