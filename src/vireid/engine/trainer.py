"""The training loop: dataset → sampler → model → loss, and the hooks that do the rest.

One iteration takes N identities with one RGB and one IR image each (the sampler), augments
them (pad + random crop + flip), runs both modalities through the DSCSN in one pass, builds
the N positive and r·N negative pairs and applies the loss of ``cfg.loss.kind`` (the loss
registry, :mod:`vireid.losses.registry`). With ``data.same_modality_pairs`` (open set) each
identity brings a second RGB and IR image and RGB–RGB and IR–IR pairs are added 1:1:1. Under
torchrun (DDP) each rank takes N/k ids and builds its pairs among them; ``pair_groups`` lets
one process do the same (docs/training.md).

What a run writes (run folder, metrics, checkpoints, validation, progress, loss plot) is done
by hooks (:mod:`vireid.engine.hooks`); the data of each iteration by
:mod:`vireid.engine.train_data`, in background workers when ``data.workers`` > 0 (the same
batches for any worker count: each step is a pure function of its iteration).

Reproducibility: all randomness comes from seeded generators (sampler plan per epoch,
augmentation, pair building, model init) whose states are saved in every checkpoint, and
on the CPU ``torch.use_deterministic_algorithms`` is on; a resumed CPU run ends with the same
weights, bit for bit, as one that was not interrupted (on the same machine and thread count).
"""
from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from vireid.config import Config, from_dict, save_config
from vireid.data.registry import get_dataset
from vireid.data.sampler import CrossModalitySampler
from vireid.data.transforms import TrainTransform
from vireid.engine.checkpoint import check_resumable, load_checkpoint, load_state_strict
from vireid.engine.hooks import Hook, TrainState, default_hooks
from vireid.engine.params import apply_freeze, frozen_to_eval, load_init_weights, param_groups
from vireid.engine.resolve import resolve_names
from vireid.engine.rundir import (LOCK_NAME, check_resume_config, check_run_dir,
                                  discard_unstarted_run, first_missing_folder, open_run_dir,
                                  run_lock, truncate_metrics, write_json)
from vireid.engine.schedule import lr_at
from vireid.engine.train_data import (LocalStep, SplitPlan, StepSource, iterations_per_epoch,
                                      plan_split, prepare_data, resolve_pair_groups, to_device)
from vireid.errors import CheckpointError, ConfigError, TrainingError
from vireid.losses.pairs import PBCE_NEGATIVES
from vireid.losses.registry import LossFn, LossSpec, StepBatch, attach_loss_head, get_loss
from vireid.models.build import build_model
from vireid.utils import distributed as D
from vireid.utils.runtime import (deterministic, resolve_device, restore_rng_state,
                                  seed_everything, set_cpu_threads)

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: train.amp → autocast dtype (None: full precision).
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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


class StepModule(nn.Module):
    """model + loss as one module, so DDP sees the whole step in its ``forward`` (DDP only
    synchronises gradients of work done inside the wrapper's forward)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, cfg: Config) -> None:
        super().__init__()
        self.model, self.loss_fn, self.cfg = model, loss_fn, cfg

    def forward(self, s: LocalStep) -> tuple[Tensor, dict[str, Tensor]]:
        f_rgb, g_rgb, f_ir, g_ir = self.model.forward_pair(s.x_rgb, s.x_ir)
        ia, ib, t = PBCE_NEGATIVES[self.cfg.loss.pbce_negatives](
            g_rgb, g_ir, s.y_rgb, s.y_ir, s.pairs["rgb-ir"], self.cfg.data.neg_ratio)
        same = {k: v for k, v in s.pairs.items() if k != "rgb-ir"}
        step = StepBatch(f_rgb, g_rgb, f_ir, g_ir, s.y_rgb, s.y_ir, ia, ib, t, same)
        return self.loss_fn(self.model, step, self.cfg)


def _global_values(loss: Tensor, parts: dict[str, Tensor], world: int) -> dict[str, float]:
    """The loss and its parts as floats, averaged over the ranks (equal shares, so this is
    the value of the global batch); NaN on any rank makes it NaN everywhere, so every rank
    stops at the same iteration."""
    names = ["loss", *parts]
    vals = torch.stack([loss.detach(), *(v.detach() for v in parts.values())]).double().cpu()
    if world > 1:
        torch.distributed.all_reduce(vals)
        vals /= world
    return {k: float(v) for k, v in zip(names, vals.tolist())}


def train(cfg: Config, run_dir: PathLike, resume: bool = False, overwrite: bool = False,
          progress: bool = True, stop_after: Optional[int] = None,
          pair_groups: Optional[int] = None, hooks: Optional[list[Hook]] = None) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (see :mod:`vireid.engine.rundir` for the folder).

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
        stop_after: stop (with a checkpoint) once this many epochs (≥ 1) are done in total,
            without changing the schedule; a later ``resume`` continues.
        pair_groups: G, the number of equal groups each batch's N ids are split into, pairs
            being built (and images augmented) within each group; default: the number of
            processes, or the run's value on resume. One process with G = k computes what a
            k-process DDP run computes.
        hooks: replaces :func:`vireid.engine.hooks.default_hooks` (checkpoints, metrics,
            validation, progress, loss plot, diagnostics).

    Everything checkable without training is checked first (:func:`check_before_run`),
    before ``run_dir`` is created or changed; a new run that fails before its first step
    removes what it wrote (:func:`vireid.engine.rundir.discard_unstarted_run`).

    Raises:
        ConfigError, DataError, CheckpointError: bad config, run folder, data or pretrained
            weights; the folder is in use.
        TrainingError: the loss became NaN/inf (the last good checkpoint stays).
        OutputWriteError: a checkpoint, log or summary could not be written (disk full,
            read-only folder); the previous file stays intact.
    """
    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    world, rank = D.world_size(), D.rank()
    io = D.RankZeroIO(rank == 0, world)
    plan = check_before_run(cfg, run_dir, resume=resume, overwrite=overwrite,
                            stop_after=stop_after, pair_groups=pair_groups, world=world)
    if cfg.train.threads is not None:
        set_cpu_threads(cfg.train.threads)
    device = plan.device
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", D.local_rank() % max(torch.cuda.device_count(), 1))

    created = first_missing_folder(run_dir)
    lock_existed = (run_dir / LOCK_NAME).exists()
    lock = run_lock(run_dir)
    opened = False
    state: Optional[TrainState] = None
    try:
        io.run(lambda: open_run_dir(run_dir, resume, overwrite, lock), f"run folder {run_dir}")
        opened = True
        with deterministic(device):
            state, ckpt = _setup(cfg, run_dir, resume, stop_after, pair_groups, device, io,
                                 world, rank, plan.split)
            loop_hooks = default_hooks(cfg, progress) if hooks is None else hooks
            _loop(state, plan.loss.fn, loop_hooks)
        return _finish(state, ckpt, t_start)
    except BaseException:
        # A new run that stopped before its first step (Ctrl-C or an error while the data
        # was cached, the model built, …) leaves nothing: no folder it created, no files
        # in a folder that was there. Never after a failed open: the lock may be another's.
        if opened and not resume and rank == 0 and (state is None or state.global_it == 0):
            discard_unstarted_run(run_dir, created, lock_existed)
        raise
    finally:
        lock.release()


@dataclass
class RunPlan:
    """What :func:`check_before_run` found: the device, the loss and the training split."""

    device: torch.device
    loss: LossSpec
    split: SplitPlan


def check_before_run(cfg: Config, run_dir: Path, *, resume: bool = False,
                     overwrite: bool = False, stop_after: Optional[int] = None,
                     pair_groups: Optional[int] = None, world: int = 1) -> RunPlan:
    """Everything a run can check before it creates or changes its folder: names against
    their registries, the device, the run folder's resume/overwrite rules, the dataset's
    layout and id counts (``data.val_ids``, ``data.ids_per_batch``, pair groups), and the
    model (the CCN kernel against the feature map, a loss head, ``model.pretrained``
    readable and fitting), built on the meta device (no memory, no weights kept).

    Raises:
        ConfigError, DataError, CheckpointError: naming what is wrong; nothing is written.
    """
    if not cfg.data.root:
        raise ConfigError("data.root: expected the dataset folder (--data-root), found nothing")
    names = resolve_names(cfg)
    if cfg.data.same_modality_pairs and not names.loss.same_modality:
        raise ConfigError(f"data.same_modality_pairs: not supported by loss.kind "
                          f"{cfg.loss.kind!r}")
    if stop_after is not None and stop_after < 1:
        raise ConfigError(f"stop_after: expected a number of epochs >= 1, found {stop_after}")
    device = resolve_device(cfg.train.device)
    if cfg.train.amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp: 'fp16' needs a CUDA device (its gradient scaler exists "
                          "for fp16 on GPUs); use 'bf16' or 'off' on the CPU")
    if cfg.train.freeze != "none" and not cfg.model.init_from and not resume:
        # checked here, not in config validation, so that a head preset loads without a run
        raise ConfigError(f"train.freeze={cfg.train.freeze} trains the CCN on a finished "
                          f"embedding: expected model.init_from=RUN_OR_CHECKPOINT, found none")
    check_run_dir(run_dir, resume, overwrite)
    if pair_groups is not None or not resume:  # a resumed run may take the run's own value
        resolve_pair_groups(cfg.data.ids_per_batch, world, pair_groups)
    split = plan_split(cfg, cfg.data.root)
    with warnings.catch_warnings(), torch.device("meta"):
        # Loading pretrained weights into meta tensors is a no-op torch warns about, per
        # tensor; the file is still read and its keys and shapes checked.
        warnings.filterwarnings("ignore", message=".*non-meta parameter.*")
        model = attach_loss_head(build_model(cfg, split.split.num_classes,
                                             load_pretrained=not resume and not cfg.model.init_from),
                                 cfg)
        if not resume and cfg.model.init_from:
            load_init_weights(model, cfg, split.split.num_classes)
    apply_freeze(model, cfg.train.freeze, names.loss.trains_ccn)
    return RunPlan(device, names.loss, split)


def _setup(cfg: Config, run_dir: Path, resume: bool, stop_after: Optional[int],
           pair_groups: Optional[int], device: torch.device, io: D.RankZeroIO, world: int,
           rank: int, split: Optional[SplitPlan] = None
           ) -> tuple[TrainState, Optional[dict[str, Any]]]:
    """Data, model, optimizer and sampler of a new run, or of the run being resumed
    (``split``: the training split :func:`check_before_run` loaded)."""
    ckpt = None
    if resume:
        ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        check_resumable(ckpt)
        check_resume_config(ckpt["config"], cfg)
        from_dict(ckpt["config"])  # still valid for this vireid
        saved_groups = ckpt["extra"].get("pair_groups")
        if pair_groups is None and saved_groups is not None and int(saved_groups) % world == 0:
            pair_groups = int(saved_groups)
    groups = resolve_pair_groups(cfg.data.ids_per_batch, world, pair_groups)
    if ckpt is not None and ckpt["extra"].get("pair_groups", 1) != groups:
        log.warning("resuming with %d pair groups, the run used %s: the pairs (and hence the "
                    "weights) will differ from an uninterrupted run", groups,
                    ckpt["extra"].get("pair_groups", 1))
    seed_everything(cfg.train.seed)
    data = prepare_data(cfg, cfg.data.root, split)
    num_classes = data.split.num_classes
    iters = iterations_per_epoch(cfg, data.split)
    sampler = CrossModalitySampler(data.labels_rgb, data.labels_ir, cfg.data.ids_per_batch,
                                   iters, seed=cfg.train.seed, rank=rank, world_size=world,
                                   draws=2 if cfg.data.same_modality_pairs else 1)
    fresh = ckpt is None
    model = attach_loss_head(build_model(cfg, num_classes,
                                         load_pretrained=fresh and not cfg.model.init_from), cfg)
    if fresh and cfg.model.init_from:
        load_init_weights(model, cfg, num_classes)
    apply_freeze(model, cfg.train.freeze, get_loss(cfg.loss.kind).trains_ccn)
    if world > 1 and cfg.train.sync_bn:
        model = D.convert_sync_batchnorm(model, device)
    model = model.to(device)
    optimizer = torch.optim.SGD(param_groups(model, cfg.train.backbone_lr_mult,
                                             cfg.train.ccn_lr_mult), lr=cfg.train.lr,
                                momentum=cfg.train.momentum, weight_decay=cfg.train.weight_decay)
    total = cfg.train.epochs
    state = TrainState(cfg=cfg, run_dir=run_dir, model=model, optimizer=optimizer,
                       sampler=sampler, data=data, device=device, io=io, world=world, rank=rank,
                       groups=groups, iters=iters, num_classes=num_classes, start_epoch=0,
                       end_epoch=total,
                       dataset_meta={"name": cfg.data.dataset,
                                     "trial": cfg.data.trial if get_dataset(cfg.data.dataset).per_trial else None,
                                     "root": str(Path(cfg.data.root).resolve())})
    if ckpt is not None:
        if int(ckpt["num_classes"]) != num_classes:
            raise ConfigError(f"cannot resume: the run has {ckpt['num_classes']} classes, the "
                              f"data now gives {num_classes}")
        load_state_strict(model, ckpt["model"], source=ckpt["path"])
        _restore(ckpt, "optimizer", optimizer.load_state_dict)
        _restore(ckpt, "sampler", sampler.load_state_dict)
        _restore(ckpt, "rng", restore_rng_state)
        state.start_epoch, state.global_it = int(ckpt["epoch"]), int(ckpt["iteration"])
        state.history = list(ckpt["history"])
        state.best = dict(ckpt["extra"].get("best", {}))
        saved_threads = ckpt["extra"].get("threads")
        if saved_threads is not None and saved_threads != torch.get_num_threads():
            log.warning("resuming with %d torch threads, the run used %d: the weights may "
                        "differ in the last bits from an uninterrupted run",
                        torch.get_num_threads(), saved_threads)
        io.run(lambda: truncate_metrics(run_dir / "metrics.jsonl", state.global_it),
               f"metrics log in {run_dir}")
        log.info("resuming %s at epoch %d (iteration %d)", run_dir, state.start_epoch,
                 state.global_it)
    if stop_after is not None:
        state.end_epoch = min(total, max(stop_after, state.start_epoch))
    io.run(lambda: save_config(cfg, run_dir / "config.yaml"), f"{run_dir / 'config.yaml'}")
    log.info("training %s: %d classes, %d RGB + %d IR images, %d iterations/epoch, epochs "
             "%d..%d of %d, device %s, %d threads, %d process(es), %d pair group(s), "
             "%d loader worker(s), amp %s", cfg.name, num_classes, len(data.split.rgb),
             len(data.split.ir), iters, state.start_epoch + 1, state.end_epoch, total, device,
             torch.get_num_threads(), world, groups, cfg.data.workers, cfg.train.amp)
    return state, ckpt


def _restore(ckpt: dict[str, Any], field: str, load: Any) -> None:
    """``load(ckpt[field])``; a state of the right kinds that still does not fit (another
    parameter count, an RNG state of the wrong length) is refused naming the field."""
    try:
        load(ckpt[field])
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {ckpt['path']}: field {field!r}: cannot restore "
                              f"the {field} state ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:160]})") from exc


def _steps(s: TrainState, source: StepSource) -> Iterator[LocalStep]:
    """The LocalSteps of the epoch ``s.epoch``, in order; built in ``data.workers``
    background processes when > 0 (pinned memory on CUDA), else in this process."""
    keys = [(s.global_it + k, np.asarray(b, dtype=np.int64)) for k, b in enumerate(s.sampler)]
    workers = s.cfg.data.workers
    if workers == 0:
        return (source[k] for k in keys)
    # Its own generator: a DataLoader draws its workers' base seed from the one it is given,
    # and drawing it from the global RNG would change what a resumed run restores.
    loader = torch.utils.data.DataLoader(source, batch_size=None, sampler=keys,
                                         num_workers=workers, collate_fn=_as_is,
                                         pin_memory=s.device.type == "cuda",
                                         prefetch_factor=2,
                                         generator=torch.Generator().manual_seed(0))
    return iter(loader)


def _as_is(x: Any) -> Any:
    return x


def _loop(s: TrainState, loss_fn: LossFn, hooks: list[Hook]) -> None:
    """Epochs ``start_epoch .. end_epoch`` of the run in ``s``: the optimisation itself."""
    cfg, model, optimizer = s.cfg, s.model, s.optimizer
    step_fn: nn.Module = StepModule(model, loss_fn, cfg)
    if s.world > 1:
        # find_unused_parameters: some losses leave parts unused (ccn-noid: the classifier).
        step_fn = DistributedDataParallel(
            step_fn, device_ids=[s.device.index] if s.device.type == "cuda" else None,
            find_unused_parameters=True)
    amp_dtype = AMP_DTYPES[cfg.train.amp]
    scaler = torch.amp.GradScaler(s.device.type, enabled=cfg.train.amp == "fp16")
    source = StepSource(s.data, TrainTransform.from_config(cfg.data),
                        cfg.data.neg_ratio, cfg.train.seed, s.rank * (s.groups // s.world),
                        cfg.data.ids_per_batch // s.groups)
    images_per_it = 2 * s.sampler.draws * cfg.data.ids_per_batch  # global
    try:
        for h in hooks:
            h.before_train(s)
        for s.epoch in range(s.start_epoch, s.end_epoch):
            s.sampler.set_epoch(s.epoch)
            model.train()
            frozen_to_eval(model)
            sums: dict[str, float] = {}
            win: dict[str, float] = {}
            win_n, win_t, ep_t = 0, time.perf_counter(), time.perf_counter()
            for it, local in enumerate(_steps(s, source)):
                lr = lr_at(cfg, s.epoch, it, s.iters)
                for g in optimizer.param_groups:
                    g["lr"] = lr * g.get("lr_mult", 1.0)  # checkpoints before lr_mult: 1
                with torch.autocast(s.device.type, dtype=amp_dtype or torch.float32,
                                    enabled=amp_dtype is not None):
                    loss, parts = step_fn(to_device(local, s.device))
                values = _global_values(loss, parts, s.world)
                if not all(math.isfinite(v) for v in values.values()):
                    raise TrainingError(
                        f"non-finite loss at epoch {s.epoch + 1}, iteration {it + 1} "
                        f"(global iteration {s.global_it + 1}; "
                        f"{', '.join(f'{k}={v}' for k, v in values.items())}); stopped "
                        f"before the update; the last good checkpoint is "
                        f"{s.last_path if s.last_path.exists() else 'none'} (unchanged); "
                        f"try a lower train.lr or train.warmup_epochs")
                for h in hooks:
                    h.on_loss(s, loss, parts)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                s.global_it += 1
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                    win[k] = win.get(k, 0.0) + v
                win_n += 1
                if s.global_it % cfg.train.log_every == 0 or it == s.iters - 1:
                    now = time.perf_counter()
                    rec = {"type": "step", "epoch": s.epoch + 1, "iteration": s.global_it,
                           **{k: v / win_n for k, v in win.items()}, "lr": lr,
                           "img_s": images_per_it * win_n / max(now - win_t, 1e-9),
                           "steps": win_n}
                    for h in hooks:
                        h.after_step(s, rec)
                    win, win_n, win_t = {}, 0, now
            ep = {"type": "epoch", "epoch": s.epoch + 1, "iteration": s.global_it,
                  **{k: v / s.iters for k, v in sums.items()}, "lr": lr,
                  "seconds": time.perf_counter() - ep_t}
            s.history.append(ep)
            for h in hooks:
                h.after_epoch(s, ep)
    finally:
        for h in hooks:  # also after a failure: close the log and the bar, draw the curve
            h.after_train(s)


def _finish(s: TrainState, ckpt: Optional[dict[str, Any]], t_start: float) -> TrainResult:
    """The run's summary.json and the caller's TrainResult."""
    cfg = s.cfg
    finished = s.end_epoch >= cfg.train.epochs
    seconds = time.perf_counter() - t_start
    result = TrainResult(run_dir=s.run_dir, last_checkpoint=s.last_path,
                         best_checkpoint=(s.ckpt_dir / "best.pt") if cfg.train.selection == "val" else None,
                         selection=cfg.train.selection, epochs_done=s.end_epoch,
                         epochs_total=cfg.train.epochs, iterations=s.global_it,
                         history=s.history, seconds=seconds, finished=finished)
    summary = {"finished": finished, "epochs_done": s.end_epoch, "epochs_total": cfg.train.epochs,
               "iterations": s.global_it, "iters_per_epoch": s.iters,
               "num_classes": s.num_classes, "dataset": s.dataset_meta,
               "selection": cfg.train.selection,
               "selection_rule": ("last epoch (no model selection)" if cfg.train.selection == "last"
                                  else f"best simplified rank-1 on {len(s.data.val_pids)} held-out "
                                       f"training ids (IR query -> RGB gallery)"),
               "best": s.best or None, "selected_checkpoint": str(result.selected_checkpoint),
               "final_loss": s.history[-1]["loss"] if s.history else None,
               "seconds_this_session": seconds, "device": str(s.device),
               "threads": torch.get_num_threads(), "seed": cfg.train.seed,
               "world_size": s.world, "pair_groups": s.groups}
    s.io.run(lambda: write_json(s.run_dir / "summary.json", summary), "summary")
    return result
