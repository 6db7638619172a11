"""The machine a result was measured on, for the provenance block of result files.

:func:`machine_info` is the one place that asks the platform, Python and torch about the
machine. Result files name these facts under the keys they have always used (a reproduce
table writes the torch thread count as ``threads``, a benchmark as ``torch_threads``), so a
caller lists the facts it records, each either by its name or as ``key=fact`` to store a
fact under another key; the order given is the order of the keys in the file.
"""
from __future__ import annotations

import os
import platform
from collections.abc import Callable
from typing import Any

import torch

from vireid.errors import ConfigError


def _cuda_device() -> Any:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


#: fact name -> how to read it now
FACTS: dict[str, Callable[[], Any]] = {
    "platform": platform.platform,                # OS, kernel and libc, e.g. Linux-6.1-x86_64-…
    "processor": platform.processor,              # may be "" where the OS does not say
    "python": platform.python_version,
    "torch": lambda: str(torch.__version__),
    "cpu_count": os.cpu_count,                    # logical CPUs of the machine
    "torch_threads": torch.get_num_threads,       # intra-op threads torch uses now
    "cuda_available": torch.cuda.is_available,
    "cuda_device": _cuda_device,                  # name of GPU 0, None without CUDA
    "loadavg": lambda: list(os.getloadavg()),     # 1, 5 and 15 minute load averages
}


def machine_info(*fields: str) -> dict[str, Any]:
    """The machine's facts, read now.

    Args:
        fields: fact names of :data:`FACTS`, or ``"key=fact"`` to store ``fact`` under
            ``key``. None given: every fact under its own name.

    Returns:
        {key: value}, in the order of ``fields``.

    Example: ``machine_info("platform", "threads=torch_threads")`` →
    ``{"platform": "Linux-…", "threads": 2}``.
    """
    out: dict[str, Any] = {}
    for spec in fields or tuple(FACTS):
        key, _, fact = spec.partition("=")
        fact = fact or key
        if fact not in FACTS:
            raise ConfigError(f"machine fact: expected one of {', '.join(FACTS)}, found {fact!r}")
        out[key] = FACTS[fact]()
    return out
