"""The run folder: what a run writes, the lock that keeps one writer, the metrics log, and
the checkpoint files.

Run folder::

    RUN_DIR/config.yaml           the resolved config
    RUN_DIR/metrics.jsonl         one JSON object per log step ("type": "step") and per epoch
    RUN_DIR/loss_curve.png        loss against iteration
    RUN_DIR/summary.json          how the run ended, the model selection rule and its result
    RUN_DIR/checkpoints/last.pt   after every checkpoint_every epochs and at the end
    RUN_DIR/checkpoints/epoch_XXX.pt   the last KEEP_EPOCH_CHECKPOINTS of those
    RUN_DIR/checkpoints/best.pt   only with train.selection=val: best held-out rank-1
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Optional

from vireid.config import Config
from vireid.engine.checkpoint import save_checkpoint
from vireid.errors import ConfigError
from vireid.utils.atomic import (TMP_MARK, OutputWriteError, atomic_path, atomic_write_text,
                                 describe_os_error)
from vireid.utils.locking import FolderLock

log = logging.getLogger(__name__)

#: Files a run writes into RUN_DIR; their presence means the folder "holds a run".
RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "loss_curve.png", "checkpoints")
#: epoch_XXX.pt files kept besides last.pt / best.pt (older ones are deleted).
KEEP_EPOCH_CHECKPOINTS = 3
#: Config keys that may differ when resuming: they do not change what is computed.
RESUME_MUTABLE = {"data.root", "data.workers", "data.cache", "data.cache_dir", "train.epochs",
                  "train.log_every", "train.checkpoint_every", "train.device", "train.threads",
                  "train.diag_every", "name"}


def _holds_run(run_dir: Path) -> bool:
    """A run that can be resumed: one that wrote its first checkpoint."""
    return (run_dir / "checkpoints" / "last.pt").is_file()


def _clear_run_files(run_dir: Path) -> None:
    for name in RUN_FILES:  # only what a run writes; anything else in the folder stays
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """The resume/overwrite rules of RUN_DIR, checked without writing anything (so that a
    refused run leaves no trace); :func:`prepare_run_dir` checks them again under the lock.

    Raises:
        ConfigError: both flags; RUN_DIR is a file; it holds a run and neither flag is
            given; resuming a folder without ``checkpoints/last.pt``.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} exists and is not a folder")
    if resume:
        if not _holds_run(run_dir):
            left = any((run_dir / f).exists() for f in RUN_FILES)
            raise ConfigError(f"cannot resume: expected {run_dir / 'checkpoints' / 'last.pt'}, "
                              f"found none" + ("; the run in this folder stopped before its first "
                                               "checkpoint, so start it again without --resume"
                                               if left else ""))
    elif _holds_run(run_dir) and not overwrite:
        raise ConfigError(f"run folder {run_dir} already holds a run; use --resume to continue "
                          f"it or --overwrite to start over")


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Create RUN_DIR; refuse one that holds a run unless resuming or overwriting."""
    check_run_dir(run_dir, resume, overwrite)
    if resume:
        return
    if _holds_run(run_dir):  # and overwrite (check_run_dir refused it otherwise)
        _clear_run_files(run_dir)
    elif any((run_dir / f).exists() for f in RUN_FILES):
        # A run that failed before its first checkpoint: nothing to resume, so its config,
        # log and plot are cleared and the run starts over.
        log.warning("run folder %s holds a run that stopped before its first checkpoint; "
                    "starting over", run_dir)
        _clear_run_files(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume_config(saved: dict[str, Any], cfg: Config) -> None:
    """Resuming must not change what the run computes (only RESUME_MUTABLE keys may differ)."""
    a, b = _flat(saved), _flat(cfg.to_dict())
    diffs = [f"{k}: run has {a.get(k)!r}, now {b.get(k)!r}" for k in sorted(set(a) | set(b))
             if a.get(k) != b.get(k) and k not in RESUME_MUTABLE]
    if diffs:
        raise ConfigError("cannot resume with a different config (" + "; ".join(diffs)
                          + f"); only {', '.join(sorted(RESUME_MUTABLE))} may change")


def truncate_metrics(path: Path, iteration: int) -> list[dict[str, Any]]:
    """Keep the metrics lines up to ``iteration`` (a resumed run redoes what came after)."""
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if rec.get("iteration", 0) <= iteration:
            kept.append(rec)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def _append(fd: int, data: bytes) -> None:
    """Write all of ``data`` at the end of ``fd`` (its own function so tests can make it fail)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class MetricsLog:
    """RUN_DIR/metrics.jsonl, appended one JSON line at a time.

    A line is all or nothing: when a write fails (full disk, read-only folder) the file is
    cut back to its size before that line and :class:`OutputWriteError` is raised, so the
    lines logged before stay intact and no partial line is left.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.fd: Optional[int] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputWriteError(f"cannot open the metrics log {path}: {describe_os_error(exc)}") from exc

    def write(self, rec: dict[str, Any]) -> None:
        assert self.fd is not None
        size = os.fstat(self.fd).st_size
        try:
            _append(self.fd, (json.dumps(rec) + "\n").encode())
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, size)
            raise OutputWriteError(f"cannot append to the metrics log {self.path}: "
                                   f"{describe_os_error(exc)}; the lines logged before are intact"
                                   ) from exc

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


#: Lock file inside RUN_DIR: held (flock) by the process that trains into the folder.
LOCK_NAME = ".train.lock"


def run_lock(run_dir: Path) -> FolderLock:
    """The lock a training process holds on RUN_DIR for the duration of a run."""
    return FolderLock(run_dir / LOCK_NAME, lambda holder: ConfigError(
        f"run folder {run_dir} is in use by another training process ({holder}; lock file "
        f"{run_dir / LOCK_NAME}); wait for it to end or choose another folder"))


def remove_stale_temp_files(run_dir: Path) -> int:
    """Delete temporary files left by a killed run (``.NAME.*.tmp*``) in RUN_DIR and its
    checkpoints folder; only call while holding the run's lock. Returns how many."""
    n = 0
    for folder in (run_dir, run_dir / "checkpoints"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and TMP_MARK in p.name and p.is_file():
                p.unlink(missing_ok=True)
                n += 1
    if n:
        log.info("removed %d temporary files left by an interrupted run in %s", n, run_dir)
    return n


def open_run_dir(run_dir: Path, resume: bool, overwrite: bool, lock: FolderLock) -> None:
    """Create RUN_DIR if needed, take its lock, apply the resume/overwrite rules, and clear
    the temporary files an interrupted run left."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} exists and is not a folder")
    if not resume:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputWriteError(f"cannot create the run folder {run_dir}: {describe_os_error(exc)}") from exc
    elif not run_dir.is_dir():
        raise ConfigError(f"cannot resume: expected a run folder {run_dir}, found none")
    lock.acquire()  # before looking at the folder: a second process must not race us
    prepare_run_dir(run_dir, resume, overwrite)
    remove_stale_temp_files(run_dir)


def first_missing_folder(path: Path) -> Optional[Path]:
    """The outermost folder of ``path`` (``path`` itself or a parent) that does not exist
    yet: what creating ``path`` creates. None when ``path`` exists."""
    if path.exists():
        return None
    top = path
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    return top


def discard_unstarted_run(run_dir: Path, created: Optional[Path], lock_existed: bool) -> None:
    """Remove what a run that failed before its first step wrote, while its lock is held.

    ``created``: the outermost folder this run created for RUN_DIR (see
    :func:`first_missing_folder`), None when RUN_DIR existed. A created RUN_DIR holds only
    this run's files and is removed with the created parents; in a folder that existed
    only the run's own files go (:data:`RUN_FILES`, temporary files, and the lock file
    unless it was there before), so it is left as it was. Files someone else put into a
    created folder meanwhile are kept (and so is the folder). Best effort: an error here
    is logged; the run's own error is what the caller reports.
    """
    try:
        remove_stale_temp_files(run_dir)
        _clear_run_files(run_dir)
        if created is None:
            if not lock_existed:
                (run_dir / LOCK_NAME).unlink(missing_ok=True)
            return
        leftover = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME)
        if leftover:
            log.warning("run folder %s not removed: it holds files this run did not write "
                        "(%s)", run_dir, ", ".join(leftover[:3]))
            return
        (run_dir / LOCK_NAME).unlink(missing_ok=True)
        folder = run_dir
        folder.rmdir()
        while folder != created and folder.parent != folder:
            folder = folder.parent
            if any(folder.iterdir()):  # a created parent someone has put files into since
                break
            folder.rmdir()
    except OSError as exc:
        log.warning("could not clean up the run folder %s of a run that never started: %s",
                    run_dir, describe_os_error(exc))


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2))


def write_checkpoints(ckpt_dir: Path, kwargs: dict[str, Any], improved: bool) -> None:
    """last.pt, epoch_XXX.pt (pruned to the last few) and, when improved, best.pt; each one
    atomic, so a failure leaves every previous file intact."""
    last_path = ckpt_dir / "last.pt"
    save_checkpoint(last_path, **kwargs)
    save_checkpoint(ckpt_dir / f"epoch_{kwargs['epoch']:03d}.pt", **kwargs)
    _prune_epoch_checkpoints(ckpt_dir)
    if improved:
        with atomic_path(ckpt_dir / "best.pt") as tmp:
            shutil.copyfile(last_path, tmp)


def _prune_epoch_checkpoints(ckpt_dir: Path) -> None:
    olds = sorted(ckpt_dir.glob("epoch_*.pt"))
    for p in olds[:-KEEP_EPOCH_CHECKPOINTS]:
        p.unlink(missing_ok=True)
