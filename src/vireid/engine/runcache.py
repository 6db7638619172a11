"""Evaluations of trained runs, remembered in their run folders (``vireid reproduce``).

Tables that share a run (the "Ours" row is in most of the paper's tables), and a multi-seed
table made from runs that single-seed calls already scored, should not extract features
again. :func:`cached_evaluation` keeps each evaluation in a JSON file in the run folder of
its (first) checkpoint, named by a hash of everything the result depends on: the protocol,
the scoring modes, the trials, the data root, and each checkpoint's path, size and
modification time (so a retrained run, a new file, is scored anew).
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch

from vireid.config import Config
from vireid.engine.evaluate import evaluate
from vireid.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)


def evaluate_run(checkpoints: Sequence[Path], cfg: Config, scorings: Sequence[str], protocol: str,
                 trials: Optional[list[int]]) -> dict[str, dict[str, Any]]:
    """Evaluate checkpoints (one for SYSU; one per trial for RegDB, each scored on its own
    trial) with :func:`vireid.engine.evaluate.evaluate` in each of ``scorings`` (one feature
    extraction when several); returns {scoring: result dict} (``mean``, ``std``,
    ``per_trial`` in percent, ``seconds``). The device is the run config's (``auto``: CUDA
    when there is one)."""
    modes = sorted(set(scorings))
    device = "cuda" if cfg.train.device == "cuda" or (cfg.train.device == "auto"
                                                       and torch.cuda.is_available()) else "cpu"
    scoring = modes[0] if len(modes) == 1 else "all"
    res = evaluate(list(checkpoints), data_root=cfg.data.root, protocol=protocol, scoring=scoring,
                   trials=trials, device=device)
    return {modes[0]: res} if scoring != "all" else {m: res[m] for m in modes}


def cache_path(checkpoints: Sequence[Path], data_root: str, modes: Sequence[str], protocol: str,
               trials: Optional[list[int]]) -> Path:
    """The cache file of one evaluation: ``eval-cache-<hash>.json`` in the run folder of the
    first checkpoint (``<run>/checkpoints/x.pt`` -> ``<run>/``); the hash covers the protocol, the sorted modes,
    the trials, the data root and each checkpoint's (path, size, mtime in ns)."""
    stats = [(str(c), c.stat().st_size, c.stat().st_mtime_ns) for c in map(Path, checkpoints)]
    blob = json.dumps([protocol, sorted(modes), trials, str(data_root), stats]).encode()
    return Path(checkpoints[0]).parents[1] / f"eval-cache-{hashlib.sha256(blob).hexdigest()[:12]}.json"


def cached_evaluation(checkpoints: Sequence[Path], cfg: Config, modes: Sequence[str], protocol: str,
                      trials: Optional[list[int]]) -> dict[str, dict[str, Any]]:
    """:func:`evaluate_run`, read from its cache file when there is a readable one, else
    computed and written there (atomically). An unreadable cache file is evaluated again."""
    path = cache_path(checkpoints, cfg.data.root, modes, protocol, trials)
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("unreadable evaluation cache %s: evaluating again", path)
    res = evaluate_run(checkpoints, cfg, modes, protocol, trials)
    atomic_write_text(path, json.dumps(res, default=str) + "\n")
    return res
