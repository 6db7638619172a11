"""Hooks of the training loop: everything a run does besides the optimisation step.

The loop (:mod:`vireid.engine.trainer`) calls, in order, for every hook:
``before_train`` once, ``on_loss`` before each backward pass, ``after_step`` after each
logged step (every ``train.log_every`` iterations and at the end of an epoch),
``after_epoch`` after each epoch, and ``after_train`` once, also when the run fails.
Hooks share one :class:`TrainState`; an epoch record passes through the hooks in order, so
validation adds its numbers before the metrics hook writes the line and the checkpoint hook
reads them. Only rank 0 writes files (``state.io``).
"""
from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from vireid.config import Config
from vireid.data.sampler import CrossModalitySampler
from vireid.engine.features import extract_features
from vireid.engine.rundir import MetricsLog, write_checkpoints
from vireid.engine.train_data import RowView, TrainData
from vireid.evaluation.metrics import eval_regdb
from vireid.losses.registry import get_loss
from vireid.utils.atomic import OutputWriteError, describe_os_error
from vireid.utils.distributed import RankZeroIO
from vireid.utils.runtime import capture_rng_state
from vireid.viz.curves import plot_loss_curves

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """What the loop and its hooks share during one run."""

    cfg: Config
    run_dir: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer
    sampler: CrossModalitySampler
    data: TrainData
    device: torch.device
    io: RankZeroIO
    world: int
    rank: int
    groups: int
    iters: int  # iterations per epoch
    num_classes: int
    start_epoch: int
    end_epoch: int  # this session stops after this epoch (stop_after)
    global_it: int = 0
    epoch: int = 0  # 0-based epoch in progress
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    dataset_meta: dict[str, Any] = field(default_factory=dict)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / "last.pt"

    def is_checkpoint_epoch(self, done: int) -> bool:
        """Epoch ``done`` (1-based) ends with a checkpoint (and a validation)."""
        return done % self.cfg.train.checkpoint_every == 0 or done == self.end_epoch


class Hook:
    """Base hook: every method does nothing."""

    def before_train(self, s: TrainState) -> None: ...

    def on_loss(self, s: TrainState, loss: Tensor, parts: dict[str, Tensor]) -> None: ...

    def after_step(self, s: TrainState, rec: dict[str, Any]) -> None: ...

    def after_epoch(self, s: TrainState, ep: dict[str, Any]) -> None: ...

    def after_train(self, s: TrainState) -> None: ...


class ProgressHook(Hook):
    """tqdm on a terminal (rank 0), log lines otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def before_train(self, s: TrainState) -> None:
        if self.enabled and s.main and sys.stderr.isatty():
            from tqdm import tqdm  # late: tqdm is only needed on a terminal

            self.bar = tqdm(total=s.iters * s.cfg.train.epochs, initial=s.global_it,
                            file=sys.stderr, unit="it", dynamic_ncols=True, leave=True)

    def message(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            log.info("%s", text)

    def after_step(self, s: TrainState, rec: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(rec["steps"])
            self.bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.2e}",
                                 img_s=f"{rec['img_s']:.0f}", refresh=False)
        elif s.main:
            self.message(f"epoch {rec['epoch']}/{s.cfg.train.epochs} it "
                         f"{rec['iteration'] - s.epoch * s.iters}/{s.iters} loss "
                         f"{rec['loss']:.4f} lr {rec['lr']:.2e} {rec['img_s']:.0f} img/s")

    def after_epoch(self, s: TrainState, ep: dict[str, Any]) -> None:
        if s.is_checkpoint_epoch(ep["epoch"]) and s.main:
            self.message(f"epoch {ep['epoch']}/{s.cfg.train.epochs}: loss {ep['loss']:.4f}"
                         + (f", val rank-1 {ep['val_rank1']:.1f}%" if "val_rank1" in ep else "")
                         + f" -> {s.last_path}")

    def after_train(self, s: TrainState) -> None:
        if self.bar is not None:
            self.bar.close()


class MetricsHook(Hook):
    """Appends every step and epoch record to RUN_DIR/metrics.jsonl (rank 0)."""

    def __init__(self) -> None:
        self.log: Optional[MetricsLog] = None

    def before_train(self, s: TrainState) -> None:
        self.log = s.io.run(lambda: MetricsLog(s.run_dir / "metrics.jsonl"), "metrics log")

    def _write(self, s: TrainState, rec: dict[str, Any]) -> None:
        out = {k: v for k, v in rec.items() if k != "steps"}
        s.io.run(lambda: self.log.write(out), "metrics log")  # type: ignore[union-attr]

    def after_step(self, s: TrainState, rec: dict[str, Any]) -> None:
        self._write(s, rec)

    def after_epoch(self, s: TrainState, ep: dict[str, Any]) -> None:
        self._write(s, ep)

    def after_train(self, s: TrainState) -> None:
        if self.log is not None:
            self.log.close()


@torch.no_grad()
def validate_rank1(model: nn.Module, data: TrainData, cfg: Config, device: torch.device
                   ) -> dict[str, float]:
    """Simplified-mode rank-1 / mAP (percent) on the held-out ids: IR query → RGB gallery,
    textbook CMC (eval_regdb semantics), no test data involved."""
    src = data.val_images
    q = extract_features(model, data.val_query, RowView(src, data.val_rows_query),
                         cfg.eval.batch_size, False, device)
    g = extract_features(model, data.val_gallery, RowView(src, data.val_rows_gallery),
                         cfg.eval.batch_size, False, device)
    qn = torch.nn.functional.normalize(q.G, dim=1)
    gn = torch.nn.functional.normalize(g.G, dim=1)
    dist = -(qn @ gn.T).numpy()
    cmc, mAP, _ = eval_regdb(dist, q.pids, g.pids)
    model.train()
    return {"val_rank1": float(cmc[0]) * 100, "val_mAP": float(mAP) * 100}


class ValidationHook(Hook):
    """Held-out rank-1 / mAP at every checkpoint epoch (rank 0), when ids are held out."""

    def after_epoch(self, s: TrainState, ep: dict[str, Any]) -> None:
        if s.main and s.data.val_pids and s.is_checkpoint_epoch(ep["epoch"]):
            ep.update(validate_rank1(s.model, s.data, s.cfg, s.device))


class CheckpointHook(Hook):
    """last.pt, epoch_XXX.pt and (selection=val) best.pt at every checkpoint epoch."""

    def after_epoch(self, s: TrainState, ep: dict[str, Any]) -> None:
        done = ep["epoch"]
        if not s.is_checkpoint_epoch(done):
            return
        cfg = s.cfg
        improved = (s.main and cfg.train.selection == "val"
                    and ep["val_rank1"] > s.best.get("val_rank1", -1.0))
        if improved:
            s.best = {"epoch": done, "val_rank1": ep["val_rank1"], "val_mAP": ep["val_mAP"]}
        kwargs = dict(model=s.model, cfg=cfg, num_classes=s.num_classes, epoch=done,
                      iteration=s.global_it, optimizer=s.optimizer,
                      scheduler={"kind": "multistep-warmup", "epoch": done},
                      sampler=s.sampler.state_dict(), rng=capture_rng_state(),
                      dataset=s.dataset_meta, history=s.history,
                      extra={"best": s.best, "selection": cfg.train.selection,
                             "val_pids": s.data.val_pids, "threads": torch.get_num_threads(),
                             "world_size": s.world, "pair_groups": s.groups})
        s.io.run(lambda: write_checkpoints(s.ckpt_dir, kwargs, improved), "checkpoint")


class DiagnosticsHook(Hook):
    """Every ``every`` iterations: the gradient norm that each loss component sends into the
    backbone (‖∂(w·L_k)/∂θ_backbone‖ with w the component's weight in the total loss), logged
    with the next step record as ``grad_<name>``. One extra backward pass per component,
    so it is sampled; off under DDP (the extra passes would disturb DDP's reducer)."""

    def __init__(self, every: int) -> None:
        self.every = int(every)
        self.pending: dict[str, float] = {}

    def on_loss(self, s: TrainState, loss: Tensor, parts: dict[str, Tensor]) -> None:
        if self.every <= 0 or s.world > 1 or (s.global_it % self.every):
            return
        backbone = getattr(s.model, "backbone", None)
        if backbone is None:
            return
        params = [p for p in backbone.parameters() if p.requires_grad]
        if not params:  # a frozen backbone (train.freeze) gets no gradient to measure
            return
        spec = get_loss(s.cfg.loss.kind)
        weights = spec.part_weights(s.cfg) if spec.part_weights is not None else {}
        for name, value in parts.items():
            if not value.requires_grad:
                continue
            grads = torch.autograd.grad(value * weights.get(name, 1.0), params,
                                        retain_graph=True, allow_unused=True)
            sq = sum(float(g.double().pow(2).sum()) for g in grads if g is not None)
            self.pending[f"grad_{name}"] = math.sqrt(sq)

    def after_step(self, s: TrainState, rec: dict[str, Any]) -> None:
        rec.update(self.pending)
        self.pending = {}


class LossPlotHook(Hook):
    """RUN_DIR/loss_curve.png from metrics.jsonl at the end (rank 0). A failure is logged,
    never raised: the plot must not hide the training outcome (the figure is written
    atomically, so the previous picture stays intact and no temporary file is left)."""

    def after_train(self, s: TrainState) -> None:
        path = s.run_dir / "metrics.jsonl"
        if not s.main or not path.is_file():
            return
        png = s.run_dir / "loss_curve.png"
        try:
            recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            plot_loss_curves({s.run_dir.name or "run": recs}, png)
        except OSError as exc:
            log.error("cannot write the loss curve %s: %s; the previous picture, if any, is "
                      "intact", png, describe_os_error(exc))
        except OutputWriteError as exc:  # the atomic write already names path and reason
            log.error("cannot write the loss curve: %s", exc)
        except Exception as exc:  # a plot must never hide the training outcome
            log.warning("could not plot the loss curve: %s", exc)


def default_hooks(cfg: Config, progress: bool) -> list[Hook]:
    """The hooks of a ``vireid train`` run, in the order they see each record."""
    return [DiagnosticsHook(cfg.train.diag_every), ValidationHook(), MetricsHook(),
            CheckpointHook(), ProgressHook(progress), LossPlotHook()]
