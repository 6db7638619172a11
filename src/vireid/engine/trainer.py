"""The training loop: dataset → sampler → model → loss, with checkpoints, logs and resume.

One iteration takes N identities with one RGB and one IR image each (the sampler), augments
them (pad + random crop + flip), runs both modalities through the DSCSN in one pass, builds
the N positive and r·N negative pairs and applies the loss of ``cfg.loss.kind``. With
``data.same_modality_pairs`` (open set) each identity brings a second RGB and IR image and
RGB–RGB and IR–IR pairs are added 1:1:1. Under torchrun (DDP) each rank takes N/k ids and
builds its pairs among them; ``pair_groups`` lets one process do the same (docs/training.md).

An epoch is ``cfg.train.iters_per_epoch`` iterations, or by default
``ceil(max(#RGB, #IR training images) / N)``: every image of the larger modality is drawn about
once per epoch (see docs/training.md).

Learning rate (a pure function of epoch and iteration, so resuming needs no scheduler state):
``lr · gamma^(number of milestones ≤ epoch)`` with 0-based epochs (milestone 30 of 60: the
last 30 epochs run at lr·gamma), times a linear warm-up ``(t + 1) / (warmup_epochs · iters)``
over the first ``warmup_epochs`` epochs (t = iteration since the start).

Run folder::

    RUN_DIR/config.yaml           the resolved config
    RUN_DIR/metrics.jsonl         one JSON object per log step ("type": "step") and per epoch
    RUN_DIR/loss_curve.png        loss against iteration
    RUN_DIR/summary.json          how the run ended, the model selection rule and its result
    RUN_DIR/checkpoints/last.pt   after every checkpoint_every epochs and at the end
    RUN_DIR/checkpoints/epoch_XXX.pt   the last KEEP_EPOCH_CHECKPOINTS of those
    RUN_DIR/checkpoints/best.pt   only with train.selection=val: best held-out rank-1

Reproducibility: all randomness comes from seeded generators (sampler plan per epoch,
augmentation, pair building, model init) whose states are saved in every checkpoint, and
on the CPU ``torch.use_deterministic_algorithms`` is on; a resumed CPU run ends with the same
weights, bit for bit, as one that was not interrupted (on the same machine and thread count).
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import random
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from vireid.losses import paper as L
from vireid.config import Config, from_dict, save_config
from vireid.data.records import ImageRecord, TrainSplit
from vireid.data.sampler import CrossModalitySampler, build_pair_sets
from vireid.data.transforms import TrainTransform
from vireid.utils.atomic import (TMP_MARK, OutputWriteError, atomic_path, atomic_write_text,
                                  describe_os_error)
from vireid.engine.checkpoint import (capture_rng_state, load_checkpoint, load_state_strict,
                                      restore_rng_state, save_checkpoint)
from vireid.errors import ConfigError, DataError, TrainingError, VireidError

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Files a run writes into RUN_DIR; their presence means the folder "holds a run".
RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "loss_curve.png", "checkpoints")
#: epoch_XXX.pt files kept besides last.pt / best.pt (older ones are deleted).
KEEP_EPOCH_CHECKPOINTS = 3
#: Config keys that may differ when resuming: they do not change what is computed.
RESUME_MUTABLE = {"data.root", "data.workers", "data.cache", "data.cache_dir", "train.epochs",
                  "train.log_every", "train.checkpoint_every", "train.device", "train.threads",
                  "name"}
#: Losses that handle the open-set same-modality pairs (data.same_modality_pairs).
SAME_MODALITY_LOSSES = ("ccn", "ccn-noid", "idl")


# --------------------------------------------------------------------------- losses
@dataclass
class StepBatch:
    """Everything a loss needs from one iteration.

    F_rgb, F_ir: (N, C, h, w); G_rgb, G_ir: (N, C); y_rgb, y_ir: (N,) labels;
    ia, ib: (M,) pair indices into the RGB / IR batch; target: (M,) 0 = same, 1 = different.
    same_modality (open set, data.same_modality_pairs): {"rgb-rgb": (ia, ib, target) into
    F_rgb on both sides, "ir-ir": the same into F_ir}; F_rgb etc. then hold 2N rows (the N
    first draws, then the N second draws) and ia/ib above index the first N.
    """

    F_rgb: Tensor
    G_rgb: Tensor
    F_ir: Tensor
    G_ir: Tensor
    y_rgb: Tensor
    y_ir: Tensor
    ia: Tensor
    ib: Tensor
    target: Tensor
    same_modality: dict[str, tuple[Tensor, Tensor, Tensor]] = field(default_factory=dict)


def pair_logits(model: nn.Module, b: StepBatch) -> tuple[Tensor, Tensor, Tensor]:
    """CCN logits la, lb (M',) and targets (M',) of every pair of the batch: the RGB–IR pairs,
    then (open set) the RGB–RGB pairs on the RGB path's maps and the IR–IR pairs on the IR
    path's maps (paper appendix: the kernels come from the pair's own feature maps)."""
    la, lb = model.ccn.logits(b.F_rgb, b.F_ir, b.ia, b.ib)
    if not b.same_modality:
        return la, lb, b.target
    las, lbs, ts = [la], [lb], [b.target]
    for name, (ia, ib, t) in b.same_modality.items():
        f = b.F_rgb if name == "rgb-rgb" else b.F_ir
        a, c = model.ccn.logits(f, f, ia, ib)
        las.append(a)
        lbs.append(c)
        ts.append(t)
    return torch.cat(las), torch.cat(lbs), torch.cat(ts)


#: loss(model, batch, cfg) -> (scalar loss with grad, {component name: scalar tensor}).
LossFn = Callable[[nn.Module, StepBatch, Config], tuple[Tensor, dict[str, Tensor]]]
LOSS_FUNCTIONS: dict[str, LossFn] = {}


def register_loss(kind: str) -> Callable[[LossFn], LossFn]:
    """Decorator registering a loss function for ``cfg.loss.kind == kind``."""
    def deco(fn: LossFn) -> LossFn:
        LOSS_FUNCTIONS[kind] = fn
        return fn
    return deco


def _id_logits(model: nn.Module, b: StepBatch) -> tuple[Tensor, Tensor]:
    logits = model.classify(torch.cat([b.G_rgb, b.G_ir], 0))  # (2N, K)
    return logits, torch.cat([b.y_rgb, b.y_ir], 0)


@register_loss("ccn")
def _loss_ccn(model: nn.Module, b: StepBatch, cfg: Config) -> tuple[Tensor, dict[str, Tensor]]:
    """The paper: L_PBCE + λ·L_ID (Eqs. 8–11)."""
    la, lb, target = pair_logits(model, b)
    logits, y = _id_logits(model, b)
    parts = L.total_loss(la, lb, target, logits, y, id_weight=cfg.loss.lambda_id)
    return parts["loss"], {"pbce": parts["pbce"], "id": parts["id"]}


@register_loss("ccn-noid")
def _loss_ccn_noid(model: nn.Module, b: StepBatch, cfg: Config) -> tuple[Tensor, dict[str, Tensor]]:
    """PBCE only (the paper's ablation without the ID loss)."""
    la, lb, target = pair_logits(model, b)
    pbce = L.pbce_loss(la, lb, target)
    return pbce, {"pbce": pbce}


@register_loss("idl")
def _loss_idl(model: nn.Module, b: StepBatch, cfg: Config) -> tuple[Tensor, dict[str, Tensor]]:
    """ID loss only (Table I's IDL baseline)."""
    logits, y = _id_logits(model, b)
    idl = L.id_loss(logits, y)
    return idl, {"id": idl}


def get_loss_fn(kind: str) -> LossFn:
    """The loss function of ``kind``.

    ``ccn``, ``ccn-noid`` and ``idl`` are defined here; the Table I baselines (``vl``,
    ``rkl``, ``kvl``) come from :func:`vireid.losses.baselines.trainer_loss`, whose learnable
    head (VL, KVL) :func:`attach_loss_head` puts on the model. Other modules can add kinds
    with :func:`register_loss`.
    """
    if kind in LOSS_FUNCTIONS:
        return LOSS_FUNCTIONS[kind]
    try:
        from vireid.losses import baselines as B
    except ImportError:
        B = None
    if B is not None and kind in getattr(B, "BASELINE_LOSSES", {}):
        return lambda model, b, cfg: B.trainer_loss(kind, model, b, cfg)
    raise ConfigError(f"loss.kind: {kind!r} is not implemented in this build; available: "
                      f"{', '.join(sorted(LOSS_FUNCTIONS))}")


def attach_loss_head(model: nn.Module, cfg: Config) -> nn.Module:
    """Put the learnable head of a baseline loss (VL, KVL) on the model as
    ``model.baseline_head``, so that the optimizer trains it and checkpoints hold it
    (:func:`vireid.engine.checkpoint.load_model_from_checkpoint` calls this too)."""
    if cfg.loss.kind in LOSS_FUNCTIONS:
        return model
    try:
        from vireid.losses.baselines import build_baseline_head
    except ImportError:
        return model
    head = build_baseline_head(cfg, model)
    if head is not None:
        model.baseline_head = head
    return model


# --------------------------------------------------------------------------- schedule
def lr_at(cfg: Config, epoch: int, it: int, iters_per_epoch: int) -> float:
    """Learning rate of iteration ``it`` (0-based) of epoch ``epoch`` (0-based)."""
    t = cfg.train
    lr = t.lr * t.lr_gamma ** sum(1 for m in t.lr_milestones if epoch >= m)
    if epoch < t.warmup_epochs:
        lr *= (epoch * iters_per_epoch + it + 1) / (t.warmup_epochs * iters_per_epoch)
    return lr


def iterations_per_epoch(cfg: Config, split: TrainSplit) -> int:
    """cfg.train.iters_per_epoch, or ceil(max(#RGB, #IR) / N)."""
    if cfg.train.iters_per_epoch:
        return int(cfg.train.iters_per_epoch)
    return max(1, math.ceil(max(len(split.rgb), len(split.ir)) / cfg.data.ids_per_batch))


# --------------------------------------------------------------------------- data
@dataclass
class TrainData:
    """The training split (after carving validation ids), its images and the val split."""

    split: TrainSplit
    root: Path
    images: Any  # .batch(indices) over split.rgb + split.ir
    labels_rgb: np.ndarray
    labels_ir: np.ndarray
    val_query: list[ImageRecord] = field(default_factory=list)  # IR images of held-out ids
    val_gallery: list[ImageRecord] = field(default_factory=list)  # RGB images of held-out ids
    val_rows_query: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    val_rows_gallery: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    val_pids: list[int] = field(default_factory=list)
    val_images: Any = None  # .batch(rows) over all training images (val rows included)


def load_train_split(cfg: Config, root: PathLike) -> TrainSplit:
    """Training split of cfg.data.dataset at ``root`` (RegDB: trial cfg.data.trial)."""
    ds = cfg.data.dataset
    if ds == "sysu":
        from vireid.data.sysu import load_sysu
        return load_sysu(root).train
    if ds == "regdb":
        from vireid.data.regdb import load_regdb
        return load_regdb(root).train(cfg.data.trial)
    if ds == "llcm":
        from vireid.data.llcm import load_llcm
        train = load_llcm(root).train
        return train() if callable(train) else train
    raise ConfigError(f"data.dataset: {ds!r} has no training loader")


def carve_validation(split: TrainSplit, num_val: int, seed: int
                     ) -> tuple[TrainSplit, list[int]]:
    """Hold out ``num_val`` identities (with images of both modalities) for model selection.

    The held-out ids are ``random.Random(seed).sample`` of the eligible ids (sorted); the
    remaining ids are relabelled 0..K'-1 by increasing pid. Returns (train split, val pids).
    """
    eligible = sorted({r.pid for r in split.rgb} & {r.pid for r in split.ir})
    if num_val > len(eligible) - 2:
        raise ConfigError(f"data.val_ids: {num_val} held-out ids leave fewer than 2 of the "
                          f"{len(eligible)} training ids that have both modalities")
    val = sorted(random.Random(seed).sample(eligible, num_val))
    keep = sorted(set(split.labels) - set(val))
    labels = {p: i for i, p in enumerate(keep)}
    vs = set(val)
    return TrainSplit([r for r in split.rgb if r.pid not in vs],
                      [r for r in split.ir if r.pid not in vs], labels), val


def prepare_data(cfg: Config, root: PathLike) -> TrainData:
    """Load the split, carve validation ids, open the image cache over all training images.

    With ``cfg.data.skip_corrupt`` undecodable images are dropped from the training and
    validation lists (their cache rows are never used) and counted in a warning; the
    validation ids are carved before that, so they do not depend on which files are corrupt.
    An identity left without images keeps its class (the classifier's size stays that of
    the split) and is simply never drawn by the sampler.
    """
    from vireid.engine.features import open_images

    root = Path(root)
    full = load_train_split(cfg, root)
    if not full.rgb or not full.ir:
        raise DataError(f"training split of {cfg.data.dataset} at {root} has {len(full.rgb)} RGB "
                        f"and {len(full.ir)} IR images; both modalities are needed")
    split, val = full, []
    if cfg.data.val_ids > 0:
        split, val = carve_validation(full, cfg.data.val_ids, cfg.train.seed)
    # One cache over every training image (val ids included), RGB first then IR.
    images = open_images(root, full.rgb + full.ir, (cfg.data.height, cfg.data.width),
                         use_cache=cfg.data.cache, cache_dir=cfg.data.cache_dir or None,
                         skip_corrupt=cfg.data.skip_corrupt)
    bad = set(getattr(images, "bad", None) or [])
    vs = set(val)
    # (cache row, record) of every usable image; rows index full.rgb + full.ir.
    rgb_rows = [(i, r) for i, r in enumerate(full.rgb) if r.path not in bad]
    ir_rows = [(len(full.rgb) + i, r) for i, r in enumerate(full.ir) if r.path not in bad]
    if bad:
        n_rgb = sum(1 for r in full.rgb if r.path in bad)
        n_ir = sum(1 for r in full.ir if r.path in bad)
        shown = sorted(bad)[:3]
        log.warning("training skipped %d corrupt image(s): e.g. %s (%d RGB and %d IR records "
                    "dropped; data.skip_corrupt)", len(bad),
                    ", ".join(str(root / b) for b in shown), n_rgb, n_ir)
        train_rgb = [r for _, r in rgb_rows if r.pid not in vs]
        train_ir = [r for _, r in ir_rows if r.pid not in vs]
        if not train_rgb or not train_ir:
            raise DataError(f"training split of {cfg.data.dataset} at {root}: after skipping "
                            f"{len(bad)} corrupt image(s), {len(train_rgb)} RGB and "
                            f"{len(train_ir)} IR training images remain; expected both")
        split = TrainSplit(train_rgb, train_ir, split.labels)
    row_rgb = [i for i, r in rgb_rows if r.pid not in vs]
    row_ir = [i for i, r in ir_rows if r.pid not in vs]
    data = TrainData(split=split, root=root, images=_Rows(images, np.array(row_rgb + row_ir)),
                     labels_rgb=np.array([split.labels[r.pid] for r in split.rgb], np.int64),
                     labels_ir=np.array([split.labels[r.pid] for r in split.ir], np.int64))
    if val:
        data.val_pids = val
        data.val_query = [r for _, r in ir_rows if r.pid in vs]
        data.val_gallery = [r for _, r in rgb_rows if r.pid in vs]
        data.val_rows_query = np.array([i for i, r in ir_rows if r.pid in vs], np.int64)
        data.val_rows_gallery = np.array([i for i, r in rgb_rows if r.pid in vs], np.int64)
        data.val_images = images
        if bad and (not data.val_query or not data.val_gallery):
            raise DataError(f"data.val_ids: after skipping {len(bad)} corrupt image(s), the "
                            f"held-out ids {val} keep {len(data.val_query)} IR and "
                            f"{len(data.val_gallery)} RGB images; expected at least one of each")
    return data


class _Rows:
    """A view of an image source through a row map: ``batch(i)`` = ``source.batch(rows[i])``."""

    def __init__(self, source: Any, rows: np.ndarray) -> None:
        self.source, self.rows = source, rows

    def batch(self, indices: Any) -> np.ndarray:
        return self.source.batch(self.rows[np.asarray(indices, dtype=np.int64)])


# --------------------------------------------------------------------------- run folder
def _holds_run(run_dir: Path) -> bool:
    return any((run_dir / f).exists() for f in RUN_FILES)


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Create RUN_DIR; refuse one that holds a run unless resuming or overwriting."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    if resume:
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise ConfigError(f"cannot resume: expected {run_dir / 'checkpoints' / 'last.pt'}, "
                              f"found none")
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} exists and is not a folder")
    if _holds_run(run_dir):
        if not overwrite:
            raise ConfigError(f"run folder {run_dir} already holds a run; use --resume to continue "
                              f"it or --overwrite to start over")
        for name in RUN_FILES:  # only what a run writes; anything else in the folder stays
            p = run_dir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
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


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))


def _truncate_metrics(path: Path, iteration: int) -> list[dict[str, Any]]:
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


# --------------------------------------------------------------------------- run lock
#: Lock file inside RUN_DIR: held (flock) by the process that trains into the folder.
LOCK_NAME = ".train.lock"


class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.train.lock`` for the duration of a run.

    The kernel drops the lock when its process dies (even by SIGKILL), so a stale lock file
    never blocks a later run; the file records ``pid PID on HOST`` for the error message of
    a second process. Without ``fcntl`` (Windows) no lock is taken.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self.fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            log.warning("no fcntl: %s is not protected against a second run", self.path.parent)
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
            raise ConfigError(f"run folder {self.path.parent} is in use by another training "
                              f"process ({holder}; lock file {self.path}); wait for it to end "
                              f"or choose another folder") from None
        try:
            os.ftruncate(fd, 0)
            _append(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
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


class _Rank0:
    """Runs file writes on rank 0 only, and stops every rank when one of them fails.

    ``run(fn, what)`` calls ``fn`` on rank 0; an OSError becomes :class:`OutputWriteError`
    naming ``what``. Then (all ranks) the outcome is broadcast from rank 0: rank 0 re-raises
    its error, the other ranks raise :class:`TrainingError` quoting it, instead of waiting in
    the next collective until the timeout. Without a process group it is a plain call.
    """

    def __init__(self, main: bool, world: int) -> None:
        self.main, self.world = main, world

    def run(self, fn: Callable[[], Any], what: str) -> Any:
        err: Optional[VireidError] = None
        out = None
        if self.main:
            try:
                out = fn()
            except VireidError as exc:
                err = exc
            except OSError as exc:
                err = OutputWriteError(f"cannot write {what}: {describe_os_error(exc)}")
                err.__cause__ = exc
        if self.world > 1:
            from vireid.utils import distributed as D

            msg = D.broadcast_object(None if err is None else str(err), src=0)
            if err is None and msg is not None:
                raise TrainingError(f"stopped: rank 0 failed: {msg}")
        if err is not None:
            raise err
        return out


# --------------------------------------------------------------------------- per-iteration data
#: Streams of :func:`step_generator`.
AUGMENT_STREAM, PAIRS_STREAM = 1, 2


def step_generator(seed: int, stream: int, iteration: int, group: int) -> torch.Generator:
    """The generator of one (iteration, pair group): a pure function of its arguments, so a
    resumed run and every DDP rank draw exactly what one uninterrupted process draws for
    that group, with no generator state to save or share."""
    s = np.random.SeedSequence([int(seed), stream, int(iteration), int(group)])
    return torch.Generator().manual_seed(int(s.generate_state(1, np.uint64)[0]))


def resolve_pair_groups(num_ids: int, world: int, requested: Optional[int]) -> int:
    """Number G of equal groups each global batch's N ids are split into for pair building
    (default: the number of processes, each building pairs among its own N/G ids)."""
    g = world if requested is None else int(requested)
    if g < 1 or g % world or num_ids % g:
        raise ConfigError(f"pair groups: expected a multiple of the {world} processes that "
                          f"divides data.ids_per_batch={num_ids}, found {g}")
    if num_ids // g < 2:
        raise ConfigError(f"pair groups: {g} groups of data.ids_per_batch={num_ids} leave fewer "
                          f"than 2 identities per group (no negative pairs)")
    return g


@dataclass
class LocalStep:
    """One rank's share of an iteration, ready for the model.

    x_rgb, x_ir: (d·n, 3, H, W), the n first draws then (open set, d = 2) the n second draws;
    y_rgb, y_ir: (d·n,); pairs: {set name: (ia, ib, target)} with indices into those rows.
    """

    x_rgb: Tensor
    x_ir: Tensor
    y_rgb: Tensor
    y_ir: Tensor
    pairs: dict[str, tuple[Tensor, Tensor, Tensor]]


def build_local_step(idx: np.ndarray, images: Any, n_rgb: int, labels_rgb: Tensor,
                     labels_ir: Tensor, transform: TrainTransform, neg_ratio: int, seed: int,
                     iteration: int, first_group: int, group_size: int) -> LocalStep:
    """Images, labels and pairs of this rank's identities of one iteration.

    idx: (n, 2·d) sampler rows ``(rgb, ir[, rgb2, ir2])``; they form n / group_size groups
    numbered from ``first_group`` (global group numbers). Each group is augmented and paired
    with its own :func:`step_generator` s, and pairs never cross groups: so a DDP rank
    holding groups [a, b) computes exactly what one process with the same G computes for
    them.
    """
    n, cols = idx.shape
    draws = cols // 2
    raw_rgb = [images.batch(idx[:, 2 * d]) for d in range(draws)]
    raw_ir = [images.batch(idx[:, 2 * d + 1] + n_rgb) for d in range(draws)]
    xr: list[list[Tensor]] = [[] for _ in range(draws)]
    xi: list[list[Tensor]] = [[] for _ in range(draws)]
    sets: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {}
    lab_r = [labels_rgb[torch.from_numpy(idx[:, 2 * d])] for d in range(draws)]
    lab_i = [labels_ir[torch.from_numpy(idx[:, 2 * d + 1])] for d in range(draws)]
    for j in range(n // group_size):
        o = j * group_size
        sl = slice(o, o + group_size)
        gen = step_generator(seed, AUGMENT_STREAM, iteration, first_group + j)
        for d in range(draws):
            xr[d].append(transform(raw_rgb[d][sl], gen))
            xi[d].append(transform(raw_ir[d][sl], gen))
        pgen = step_generator(seed, PAIRS_STREAM, iteration, first_group + j)
        second = (lab_r[1][sl], lab_i[1][sl]) if draws == 2 else (None, None)
        got = build_pair_sets(lab_r[0][sl], lab_i[0][sl], neg_ratio, pgen, *second)
        for name, (ia, ib, t) in got.items():
            # The second draws sit after the n first ones in the same-modality tensors.
            off_b = o if name == "rgb-ir" else n + o
            sets.setdefault(name, []).append((ia + o, ib + off_b, t))
    pairs = {name: tuple(torch.cat([p[k] for p in parts]) for k in range(3))
             for name, parts in sets.items()}
    return LocalStep(torch.cat([t for d in range(draws) for t in xr[d]]),
                     torch.cat([t for d in range(draws) for t in xi[d]]),
                     torch.cat(lab_r), torch.cat(lab_i), pairs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- DDP
class _AllReduceSum(torch.autograd.Function):
    """Sum of a tensor over all ranks, differentiable: the gradient of every rank's input is
    the sum of the ranks' output gradients (each rank's output feeds its own loss)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        import torch.distributed as dist

        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:  # type: ignore[override]
        import torch.distributed as dist

        g = g.clone()
        dist.all_reduce(g)
        return g


class DistBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch of all ranks.

    ``torch.nn.SyncBatchNorm`` only runs on GPUs; this one works with any backend (gloo on
    the CPU): the per-channel sums and counts, then the centred sums of squares, are summed
    over the ranks by differentiable all-reduces, so the output, its gradients and the running statistics equal
    those of one process holding the whole batch (to float rounding). Outside training or
    without a process group it is a plain BatchNorm. Its state-dict keys are those of
    ``nn.BatchNorm2d``: checkpoints load into plain models.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"DistBatchNorm: expected (B, C, ...) input, got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)
        # Two passes (sum, then centred sum of squares), as accurate as F.batch_norm; the
        # one-pass E[x²] − E[x]² drifted the running variances by ~5e-5 relative.
        tot = _AllReduceSum.apply(torch.cat([x.sum(dims), count]))  # (C + 1,)
        n = tot[-1].detach()
        mean = tot[:-1] / n
        xc = x - mean.view(shape)
        var = _AllReduceSum.apply((xc * xc).sum(dims)) / n  # biased: what BN normalises with
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(var.detach() * n / (n - 1).clamp(min=1),
                                                         alpha=momentum)
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``module`` synchronised across ranks: ``nn.SyncBatchNorm`` on
    CUDA, :class:`DistBatchNorm` otherwise (parameters and buffers are kept, not copied)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, DistBatchNorm):
        new = DistBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module


class _StepModule(nn.Module):
    """model + loss as one module, so DDP sees the whole step in its ``forward`` (DDP only
    synchronises gradients of work done inside the wrapper's forward)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, cfg: Config) -> None:
        super().__init__()
        self.model, self.loss_fn, self.cfg = model, loss_fn, cfg

    def forward(self, s: LocalStep) -> tuple[Tensor, dict[str, Tensor]]:
        f_rgb, g_rgb, f_ir, g_ir = self.model.forward_pair(s.x_rgb, s.x_ir)
        ia, ib, t = s.pairs["rgb-ir"]
        same = {k: v for k, v in s.pairs.items() if k != "rgb-ir"}
        step = StepBatch(f_rgb, g_rgb, f_ir, g_ir, s.y_rgb, s.y_ir, ia, ib, t, same)
        return self.loss_fn(self.model, step, self.cfg)


def _to_device(s: LocalStep, device: torch.device) -> LocalStep:
    if device.type == "cpu":
        return s
    return LocalStep(s.x_rgb.to(device), s.x_ir.to(device), s.y_rgb.to(device),
                     s.y_ir.to(device),
                     {k: tuple(t.to(device) for t in v) for k, v in s.pairs.items()})  # type: ignore[misc]



# --------------------------------------------------------------------------- determinism
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' requested but no CUDA device is available")
    return torch.device(name)


@contextlib.contextmanager
def deterministic(device: torch.device):
    """Deterministic kernels on the CPU for the duration of a run (restored afterwards)."""
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


def set_threads(threads: Optional[int]) -> None:
    """Fix torch's CPU thread count (None: leave torch's default). Results of reductions can
    depend on the thread count, so bit-identical reruns need the same count; the count used
    is recorded in the run's summary and checkpoints."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"threads: expected an integer >= 1, found {threads}")
    torch.set_num_threads(int(threads))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- validation
@torch.no_grad()
def validate_rank1(model: nn.Module, data: TrainData, cfg: Config, device: torch.device
                   ) -> dict[str, float]:
    """Simplified-mode rank-1 / mAP (percent) on the held-out ids: IR query → RGB gallery,
    textbook CMC (eval_regdb semantics), no test data involved."""
    from vireid.engine.features import extract_features
    from vireid.evaluation.metrics import eval_regdb

    src = data.val_images
    q = extract_features(model, data.val_query, _Rows(src, data.val_rows_query),
                         cfg.eval.batch_size, False, device)
    g = extract_features(model, data.val_gallery, _Rows(src, data.val_rows_gallery),
                         cfg.eval.batch_size, False, device)
    qn = torch.nn.functional.normalize(q.G, dim=1)
    gn = torch.nn.functional.normalize(g.G, dim=1)
    dist = -(qn @ gn.T).numpy()
    cmc, mAP, _ = eval_regdb(dist, q.pids, g.pids)
    model.train()
    return {"val_rank1": float(cmc[0]) * 100, "val_mAP": float(mAP) * 100}


# --------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    """How a call of :func:`train` ended."""

    run_dir: Path
    last_checkpoint: Path
    best_checkpoint: Optional[Path]
    selection: str
    epochs_done: int
    epochs_total: int
    iterations: int
    history: list[dict[str, Any]]
    seconds: float
    finished: bool  # False when stopped early by ``stop_after``

    @property
    def selected_checkpoint(self) -> Path:
        """The checkpoint the selection rule picks (best.pt for "val", else last.pt)."""
        return self.best_checkpoint if self.best_checkpoint is not None else self.last_checkpoint


class _Progress:
    """tqdm on a terminal, log lines otherwise."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, file=sys.stderr, unit="it",
                            dynamic_ncols=True, leave=True)

    def update(self, n: int, info: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(loss=f"{info['loss']:.4f}", lr=f"{info['lr']:.2e}",
                                 img_s=f"{info['img_s']:.0f}", refresh=False)

    def message(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            log.info("%s", text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(cfg: Config, run_dir: PathLike, resume: bool = False, overwrite: bool = False,
          progress: bool = True, stop_after: Optional[int] = None,
          pair_groups: Optional[int] = None) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (see the module docstring for the folder's contents).

    Under ``torchrun`` (a process group initialised by the caller, e.g. ``vireid train``
    through :func:`vireid.utils.distributed.init_from_env`) every rank calls this: each
    takes its N / world_size identities of every global batch, gradients are averaged by
    DDP, and only rank 0 writes files (see docs/training.md, "Distributed training").

    Args:
        cfg: validated config; ``cfg.data.root`` is the dataset folder.
        run_dir: output folder; refused when it holds a run, unless resume/overwrite, and
            when another process is training into it (``RUN_DIR/.train.lock``).
        resume: continue the run in ``run_dir`` from ``checkpoints/last.pt``; ``cfg`` must
            equal the run's config except for RESUME_MUTABLE keys (e.g. more epochs).
        overwrite: delete the run files in ``run_dir`` and start over.
        progress: a progress bar on a terminal (log lines otherwise or when False).
        stop_after: stop (with a checkpoint) once this many epochs are done in total, without
            changing the schedule; a later ``resume`` continues. For preemptible jobs and tests.
        pair_groups: G, the number of equal groups each batch's N ids are split into, pairs
            being built (and images augmented) within each group; default: the number of
            processes, or the run's value on resume. One process with G = k computes what a
            k-process DDP run computes.

    Raises:
        ConfigError, DataError: bad config, run folder or data; the folder is in use.
        TrainingError: the loss became NaN/inf (the last good checkpoint stays).
        OutputWriteError: a checkpoint, log or summary could not be written (disk full,
            read-only folder); the previous file stays intact.
    """
    from vireid.utils import distributed as D

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    world, rank = D.world_size(), D.rank()
    main = rank == 0
    io = _Rank0(main, world)
    if not cfg.data.root:
        raise ConfigError("data.root: expected the dataset folder (--data-root), found nothing")
    if cfg.data.same_modality_pairs and cfg.loss.kind not in SAME_MODALITY_LOSSES:
        raise ConfigError(f"data.same_modality_pairs: supported with loss.kind "
                          f"{', '.join(SAME_MODALITY_LOSSES)}, found {cfg.loss.kind!r}")
    if cfg.train.threads is not None:
        D.set_cpu_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", D.local_rank() % max(torch.cuda.device_count(), 1))
    loss_fn = get_loss_fn(cfg.loss.kind)

    lock = RunLock(run_dir)
    try:
        io.run(lambda: _open_run_dir(run_dir, resume, overwrite, lock), f"run folder {run_dir}")
        return _train_locked(cfg, run_dir, resume, progress, stop_after, pair_groups, device,
                             loss_fn, io, world, rank, t_start)
    finally:
        lock.release()


def _open_run_dir(run_dir: Path, resume: bool, overwrite: bool, lock: RunLock) -> None:
    """Create RUN_DIR if needed, take its lock, then apply the resume/overwrite rules."""
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


def _train_locked(cfg: Config, run_dir: Path, resume: bool, progress: bool,
                  stop_after: Optional[int], pair_groups: Optional[int], device: torch.device,
                  loss_fn: LossFn, io: _Rank0, world: int, rank: int, t_start: float
                  ) -> TrainResult:
    main = rank == 0
    ckpt_dir = run_dir / "checkpoints"
    ckpt = None
    if resume:
        ckpt = load_checkpoint(ckpt_dir / "last.pt")
        check_resume_config(ckpt["config"], cfg)
        from_dict(ckpt["config"])  # still valid for this vireid
        saved_groups = ckpt["extra"].get("pair_groups")
        if pair_groups is None and saved_groups is not None and int(saved_groups) % world == 0:
            pair_groups = int(saved_groups)
    n_ids = cfg.data.ids_per_batch
    groups = resolve_pair_groups(n_ids, world, pair_groups)
    if ckpt is not None and ckpt["extra"].get("pair_groups", 1) != groups:
        log.warning("resuming with %d pair groups, the run used %s: the pairs (and hence the "
                    "weights) will differ from an uninterrupted run", groups,
                    ckpt["extra"].get("pair_groups", 1))
    group_size = n_ids // groups
    groups_per_rank = groups // world
    draws = 2 if cfg.data.same_modality_pairs else 1

    with deterministic(device):
        seed_everything(cfg.train.seed)
        data = prepare_data(cfg, cfg.data.root)
        split = data.split
        num_classes = split.num_classes
        iters = iterations_per_epoch(cfg, split)
        sampler = CrossModalitySampler(data.labels_rgb, data.labels_ir, n_ids, iters,
                                       seed=cfg.train.seed, rank=rank, world_size=world,
                                       draws=draws)
        from vireid.models.build import build_model

        model = build_model(cfg, num_classes, load_pretrained=ckpt is None)
        model = attach_loss_head(model, cfg)
        if world > 1 and cfg.train.sync_bn:
            model = convert_sync_batchnorm(model, device)
        model = model.to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.train.lr,
                                    momentum=cfg.train.momentum,
                                    weight_decay=cfg.train.weight_decay)
        transform = TrainTransform(pad=cfg.data.pad, flip=cfg.data.flip)

        start_epoch, global_it, history = 0, 0, []
        best: dict[str, Any] = {}
        if ckpt is not None:
            load_state_strict(model, ckpt["model"], source=ckpt["path"])
            optimizer.load_state_dict(ckpt["optimizer"])
            sampler.load_state_dict(ckpt["sampler"])
            restore_rng_state(ckpt["rng"])
            start_epoch, global_it = int(ckpt["epoch"]), int(ckpt["iteration"])
            history = list(ckpt["history"])
            best = dict(ckpt["extra"].get("best", {}))
            if int(ckpt["num_classes"]) != num_classes:
                raise ConfigError(f"cannot resume: the run has {ckpt['num_classes']} classes, the "
                                  f"data now gives {num_classes}")
            saved_threads = ckpt["extra"].get("threads")
            if saved_threads is not None and saved_threads != torch.get_num_threads():
                log.warning("resuming with %d torch threads, the run used %d: the weights may "
                            "differ in the last bits from an uninterrupted run",
                            torch.get_num_threads(), saved_threads)
            io.run(lambda: _truncate_metrics(run_dir / "metrics.jsonl", global_it),
                   f"metrics log in {run_dir}")
            log.info("resuming %s at epoch %d (iteration %d)", run_dir, start_epoch, global_it)
        io.run(lambda: save_config(cfg, run_dir / "config.yaml"), f"{run_dir / 'config.yaml'}")

        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # find_unused_parameters: some losses leave parts unused (ccn-noid: the classifier).
            step_fn: nn.Module = DDP(_StepModule(model, loss_fn, cfg),
                                     device_ids=[device.index] if device.type == "cuda" else None,
                                     find_unused_parameters=True)
        else:
            step_fn = _StepModule(model, loss_fn, cfg)

        total_epochs = cfg.train.epochs
        end_epoch = total_epochs if stop_after is None else min(total_epochs, max(stop_after, start_epoch))
        dataset_meta = {"name": cfg.data.dataset, "trial": cfg.data.trial if cfg.data.dataset == "regdb" else None,
                        "root": str(Path(cfg.data.root).resolve())}
        log.info("training %s: %d classes, %d RGB + %d IR images, %d iterations/epoch, epochs "
                 "%d..%d of %d, device %s, %d threads, %d process(es), %d pair group(s)",
                 cfg.name, num_classes, len(split.rgb), len(split.ir), iters, start_epoch + 1,
                 end_epoch, total_epochs, device, torch.get_num_threads(), world, groups)

        y_rgb_all = torch.from_numpy(data.labels_rgb)
        y_ir_all = torch.from_numpy(data.labels_ir)
        n_rgb = len(split.rgb)
        images_per_it = 2 * draws * n_ids  # global
        bar = _Progress(iters * total_epochs, global_it, progress and main)
        last_path = ckpt_dir / "last.pt"
        mlog = io.run(lambda: MetricsLog(run_dir / "metrics.jsonl"), "metrics log")
        try:
            for epoch in range(start_epoch, end_epoch):
                sampler.set_epoch(epoch)
                model.train()
                sums: dict[str, float] = {}
                win: dict[str, float] = {}
                win_n, win_t, ep_t = 0, time.perf_counter(), time.perf_counter()
                for it, batch in enumerate(sampler):
                    lr = lr_at(cfg, epoch, it, iters)
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                    idx = np.asarray(batch, dtype=np.int64)  # (n, 2·draws)
                    local = build_local_step(idx, data.images, n_rgb, y_rgb_all, y_ir_all,
                                             transform, cfg.data.neg_ratio, cfg.train.seed,
                                             global_it, rank * groups_per_rank, group_size)
                    loss, parts = step_fn(_to_device(local, device))
                    values = _global_values(loss, parts, world)
                    if not all(math.isfinite(v) for v in values.values()):
                        raise TrainingError(
                            f"non-finite loss at epoch {epoch + 1}, iteration {it + 1} "
                            f"(global iteration {global_it + 1}; "
                            f"{', '.join(f'{k}={v}' for k, v in values.items())}); stopped "
                            f"before the update; the last good checkpoint is "
                            f"{last_path if last_path.exists() else 'none'} (unchanged); "
                            f"try a lower train.lr or train.warmup_epochs")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    global_it += 1
                    for k, v in values.items():
                        sums[k] = sums.get(k, 0.0) + v
                        win[k] = win.get(k, 0.0) + v
                    win_n += 1
                    if global_it % cfg.train.log_every == 0 or it == iters - 1:
                        now = time.perf_counter()
                        rec = {"type": "step", "epoch": epoch + 1, "iteration": global_it,
                               **{k: v / win_n for k, v in win.items()}, "lr": lr,
                               "img_s": images_per_it * win_n / max(now - win_t, 1e-9)}
                        io.run(lambda: mlog.write(rec), "metrics log")
                        bar.update(win_n, rec)
                        if bar.bar is None and main:
                            bar.message(f"epoch {epoch + 1}/{total_epochs} it {it + 1}/{iters} "
                                        f"loss {rec['loss']:.4f} lr {lr:.2e} "
                                        f"{rec['img_s']:.0f} img/s")
                        win, win_n, win_t = {}, 0, now
                done = epoch + 1
                ep = {"type": "epoch", "epoch": done, "iteration": global_it,
                      **{k: v / iters for k, v in sums.items()}, "lr": lr,
                      "seconds": time.perf_counter() - ep_t}
                is_ckpt = done % cfg.train.checkpoint_every == 0 or done == end_epoch
                if is_ckpt and cfg.train.selection == "val" and main:
                    ep.update(validate_rank1(model, data, cfg, device))
                history.append(ep)
                io.run(lambda: mlog.write(ep), "metrics log")
                if not is_ckpt:
                    continue
                improved = (main and cfg.train.selection == "val"
                            and ep["val_rank1"] > best.get("val_rank1", -1.0))
                if improved:
                    best = {"epoch": done, "val_rank1": ep["val_rank1"], "val_mAP": ep["val_mAP"]}
                kwargs = dict(model=model, cfg=cfg, num_classes=num_classes, epoch=done,
                              iteration=global_it, optimizer=optimizer,
                              scheduler={"kind": "multistep-warmup", "epoch": done},
                              sampler=sampler.state_dict(),
                              rng=capture_rng_state(), dataset=dataset_meta, history=history,
                              extra={"best": best, "selection": cfg.train.selection,
                                     "val_pids": data.val_pids,
                                     "threads": torch.get_num_threads(),
                                     "world_size": world, "pair_groups": groups})
                io.run(lambda: _write_checkpoints(ckpt_dir, kwargs, improved), "checkpoint")
                bar.message(f"epoch {done}/{total_epochs}: loss {ep['loss']:.4f}"
                            + (f", val rank-1 {ep['val_rank1']:.1f}%" if "val_rank1" in ep else "")
                            + f" -> {last_path}")
        finally:
            bar.close()
            if mlog is not None:
                mlog.close()
            if main:
                _plot_losses(run_dir)

    finished = end_epoch >= total_epochs
    seconds = time.perf_counter() - t_start
    result = TrainResult(run_dir=run_dir, last_checkpoint=last_path,
                         best_checkpoint=(ckpt_dir / "best.pt") if cfg.train.selection == "val" else None,
                         selection=cfg.train.selection, epochs_done=end_epoch,
                         epochs_total=total_epochs, iterations=global_it, history=history,
                         seconds=seconds, finished=finished)
    summary = {"finished": finished, "epochs_done": end_epoch, "epochs_total": total_epochs,
               "iterations": global_it, "iters_per_epoch": iters, "num_classes": num_classes,
               "dataset": dataset_meta, "selection": cfg.train.selection,
               "selection_rule": ("last epoch (no model selection)" if cfg.train.selection == "last"
                                  else f"best simplified rank-1 on {len(data.val_pids)} held-out "
                                       f"training ids (IR query -> RGB gallery)"),
               "best": best or None, "selected_checkpoint": str(result.selected_checkpoint),
               "final_loss": history[-1]["loss"] if history else None,
               "seconds_this_session": seconds, "device": str(device),
               "threads": torch.get_num_threads(), "seed": cfg.train.seed,
               "world_size": world, "pair_groups": groups}
    io.run(lambda: _write_json(run_dir / "summary.json", summary), "summary")
    return result


def _global_values(loss: Tensor, parts: dict[str, Tensor], world: int) -> dict[str, float]:
    """The loss and its parts as floats, averaged over the ranks (equal shares, so this is
    the value of the global batch); NaN on any rank makes it NaN everywhere, so every rank
    stops at the same iteration."""
    names = ["loss", *parts]
    vals = torch.stack([loss.detach(), *(v.detach() for v in parts.values())]).double().cpu()
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(vals)
        vals /= world
    return {k: float(v) for k, v in zip(names, vals.tolist())}


def _write_checkpoints(ckpt_dir: Path, kwargs: dict[str, Any], improved: bool) -> None:
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


def _plot_losses(run_dir: Path) -> None:
    """RUN_DIR/loss_curve.png from metrics.jsonl. A failure is logged, never raised: the plot
    must not hide the training outcome (save_figure writes atomically, so the previous
    picture stays intact and no temporary file is left)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return
    png = run_dir / "loss_curve.png"
    try:
        recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        from vireid.viz.curves import plot_loss_curves
        plot_loss_curves({run_dir.name or "run": recs}, png)
    except OSError as exc:
        log.error("cannot write the loss curve %s: %s; the previous picture, if any, is intact",
                  png, describe_os_error(exc))
    except OutputWriteError as exc:  # save_figure's atomic write already names path and reason
        log.error("cannot write the loss curve: %s", exc)
    except Exception as exc:  # a plot must never hide the training outcome
        log.warning("could not plot the loss curve: %s", exc)
