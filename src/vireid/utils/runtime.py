"""Where and how a run computes: device choice, thread count, seeding, deterministic kernels,
and the global RNG states a checkpoint carries.

Everything here is process-wide state; it lives in one module so that training, evaluation
and benchmarks set it the same way.
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from vireid.errors import ConfigError

#: Device names a config or ``--device`` may give.
DEVICE_NAMES = ("auto", "cpu", "cuda")


def resolve_device(name: str, option: str = "device") -> torch.device:
    """The torch device for ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` (a config value or an
    option named ``option`` in messages).

    Raises:
        ConfigError: an unknown name, or a GPU asked for where torch has none (a CPU-only
            build or no visible GPU) or not that many; the message says which.
    """
    text = str(name).strip()
    base, _, index = text.partition(":")
    if base not in DEVICE_NAMES or (index and (base != "cuda" or not index.isdigit())):
        raise ConfigError(f"{option}: expected cpu, cuda or cuda:N (or auto), found {name!r}")
    if base == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if not torch.backends.cuda.is_built() else "no GPU visible"
            raise ConfigError(f"{option} {text}: expected a CUDA GPU, found none (torch "
                              f"{torch.__version__}, {build}); use cpu")
        n = torch.cuda.device_count()
        if index and int(index) >= n:
            raise ConfigError(f"{option} {text}: expected a GPU index in 0..{n - 1}, "
                              f"found {index}")
    return torch.device(text)


def set_cpu_threads(threads: int) -> None:
    """Intra-op threads of torch, and so of numba's parallel kernels (the folded CCN scorer
    follows torch's count when it runs: :mod:`vireid.scoring.numba_full`). Reductions can
    depend on the count, so bit-identical reruns need the same one."""
    torch.set_num_threads(max(1, int(threads)))


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels on the CPU for the duration of a run (restored afterwards);
    on CUDA only a warning where a kernel has no deterministic version."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Global RNG states of torch, numpy and python, as weights_only-loadable values."""
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": [version, list(internal), gauss],
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
