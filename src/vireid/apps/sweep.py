"""``vireid sweep``: a hyperparameter grid, judged on validation ids only.

Every point of the grid (the Cartesian product of the dotted overrides' value lists) is
trained from the same preset with ``train.selection=val`` and ``data.val_ids=K``: K training
identities are held out (``vireid.engine.trainer.carve_validation``; the same K ids for every
point, since they depend only on ``train.seed``) and the simplified-mode rank-1 / mAP on them
(their IR images against their RGB images) is logged at every epoch. Test identities are never
read. The table (markdown and JSON) holds, per point, the validation figures of the last epoch
and of the best epoch, the seconds, and the point chosen by the criterion:

- ``criterion="last"`` (default): score = (rank-1 + mAP) / 2 of the **last** epoch — the model
  a fixed-schedule run (``train.selection=last``) would keep, so the chosen values carry over
  to runs trained on all training ids;
- ``criterion="best"``: the same score at the epoch ``train.selection=val`` keeps.

Averaging rank-1 and mAP halves the noise of rank-1 alone on a small validation set; ties
keep the earlier grid point. Comparing methods fairly means giving each the same number of
grid points (the caller's choice; the table records it).

A point whose run folder already holds a finished run with the same resolved config is not
trained again (so an interrupted sweep can be restarted, and the table rebuilt).
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from vireid.config import Config, from_dict, load_config, preset_or_path
from vireid.engine.trainer import train
from vireid.errors import ConfigError
from vireid.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

CRITERIA = ("last", "best")


@dataclass
class SweepPoint:
    """One trained grid point and its validation figures (percent)."""

    index: int
    overrides: list[str]
    run_dir: str
    last: dict[str, float]  # {"epoch", "val_rank1", "val_mAP"} of the last epoch
    best: dict[str, float]  # the same at the best-rank-1 epoch (what selection=val keeps)
    score: float
    seconds: float
    reused: bool = False


@dataclass
class SweepResult:
    """The table of a sweep and its chosen point."""

    preset: str
    fixed: list[str]
    grid: list[tuple[str, list[str]]]
    criterion: str
    val_ids: int
    points: list[SweepPoint] = field(default_factory=list)
    chosen: Optional[int] = None  # index into points

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "fixed": self.fixed,
                "grid": [{"key": k, "values": v} for k, v in self.grid],
                "criterion": self.criterion, "score": "(val rank-1 + val mAP) / 2",
                "val_ids": self.val_ids, "chosen": self.chosen,
                "chosen_overrides": (self.points[self.chosen].overrides
                                     if self.chosen is not None else None),
                "points": [p.__dict__ for p in self.points]}


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["train.lr=0.01,0.03", "loss.lambda_id=0.1,0.5"]`` -> ``[(key, [values…]), …]``.

    A value list is split on commas outside brackets, so ``train.lr_milestones=[6],[9]``
    gives two values.

    Raises:
        ConfigError: an item without ``=``, an empty value list, or a key given twice.
    """
    grid: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"sweep grid: expected KEY=V1,V2,…, found {item!r}")
        values = _split_values(text)
        if not values:
            raise ConfigError(f"sweep grid: {key} has no values in {item!r}")
        if key in seen:
            raise ConfigError(f"sweep grid: {key} given twice")
        seen.add(key)
        grid.append((key, values))
    return grid


def _split_values(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return [v for v in out if v]


def grid_points(grid: Sequence[tuple[str, Sequence[str]]]) -> list[list[str]]:
    """Cartesian product of the grid, first key slowest: a list of override lists."""
    keys = [k for k, _ in grid]
    return [[f"{k}={v}" for k, v in zip(keys, combo)]
            for combo in itertools.product(*[vals for _, vals in grid])]


def score_of(entry: dict[str, Any]) -> float:
    """(val rank-1 + val mAP) / 2 of one epoch entry."""
    return (float(entry["val_rank1"]) + float(entry["val_mAP"])) / 2.0


def summarize_history(history: Sequence[dict[str, Any]], criterion: str = "last"
                      ) -> tuple[dict[str, float], dict[str, float], float]:
    """(last, best, score) of a run's epoch entries (those with validation figures).

    best is the first epoch of highest rank-1 (the rule of ``train.selection=val``).
    """
    if criterion not in CRITERIA:
        raise ConfigError(f"sweep criterion: expected one of {', '.join(CRITERIA)}, found {criterion!r}")
    eps = [h for h in history if h.get("type", "epoch") == "epoch" and "val_rank1" in h]
    if not eps:
        raise ConfigError("sweep: the run logged no validation figures (train.selection=val?)")

    def pick(h: dict[str, Any]) -> dict[str, float]:
        return {"epoch": int(h["epoch"]), "val_rank1": float(h["val_rank1"]),
                "val_mAP": float(h["val_mAP"])}

    best_h = eps[0]
    for h in eps[1:]:
        if h["val_rank1"] > best_h["val_rank1"]:
            best_h = h
    last, best = pick(eps[-1]), pick(best_h)
    return last, best, score_of(last if criterion == "last" else best)


def _slug(overrides: Sequence[str]) -> str:
    """``["train.lr=0.01", "loss.lambda_id=0.5"]`` -> ``"lr=0.01_lambda_id=0.5"``."""
    parts = []
    for o in overrides:
        key, _, value = o.partition("=")
        parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    text = "_".join(parts) or "base"
    return "".join(c if c.isalnum() or c in "=-._" else "-" for c in text)[:80]


def _finished_history(run_dir: Path, cfg: Config) -> Optional[list[dict[str, Any]]]:
    """The epoch history of a finished run in ``run_dir`` with config ``cfg``, else None."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not summary.get("finished") or from_dict(saved).to_dict() != cfg.to_dict():
        return None
    return [json.loads(x) for x in lines if x.strip()]


def _train_point(cfg_dict: dict[str, Any], run_dir: str) -> tuple[list[dict[str, Any]], float]:
    """Worker: train one point (runs in a fresh process when jobs > 1)."""

    t0 = time.perf_counter()
    res = train(from_dict(cfg_dict), run_dir, overwrite=True, progress=False)
    return list(res.history), time.perf_counter() - t0


def run_sweep(preset: str, grid: Sequence[tuple[str, Sequence[str]]], out: PathLike, *,
              data_root: PathLike, fixed: Sequence[str] = (), val_ids: int = 60,
              criterion: str = "last", jobs: int = 1, threads: Optional[int] = 1,
              ) -> SweepResult:
    """Train every grid point and write ``out/sweep.md`` and ``out/sweep.json``.

    preset: preset name or YAML; fixed: overrides applied to every point (before the grid's).
    grid: ``parse_grid`` output; val_ids: K held-out training ids (``data.val_ids``).
    jobs: points trained at once (separate processes); threads: torch threads per point.
    Returns the table; ``result.chosen`` indexes the chosen point.
    """
    if criterion not in CRITERIA:
        raise ConfigError(f"sweep criterion: expected one of {', '.join(CRITERIA)}, found {criterion!r}")
    if val_ids < 2:
        raise ConfigError(f"sweep --val-ids: expected at least 2 held-out ids, found {val_ids}")
    if jobs < 1:
        raise ConfigError(f"sweep --jobs: expected at least 1, found {jobs}")
    out = Path(out)
    forced = [f"data.root={data_root}", "train.selection=val", f"data.val_ids={val_ids}"]
    if threads is not None:
        forced.append(f"train.threads={threads}")
    points = grid_points(grid)  # an empty grid is one point: the preset with `fixed`
    path = preset_or_path(preset)
    cfgs = [load_config(path, list(fixed) + p + forced) for p in points]
    result = SweepResult(preset=str(preset), fixed=list(fixed),
                         grid=[(k, list(v)) for k, v in grid], criterion=criterion,
                         val_ids=val_ids)
    runs = [out / "runs" / f"{i:02d}-{_slug(p)}" for i, p in enumerate(points)]
    histories: dict[int, tuple[list[dict[str, Any]], float, bool]] = {}
    todo = []
    for i, (cfg, rd) in enumerate(zip(cfgs, runs)):
        done = _finished_history(rd, cfg)
        if done is not None:
            log.info("sweep: point %d (%s) already trained in %s", i, " ".join(points[i]), rd)
            histories[i] = (done, 0.0, True)
        else:
            todo.append(i)
    log.info("sweep: %d points, %d to train, %d at a time", len(points), len(todo), jobs)
    if jobs == 1:
        for i in todo:
            log.info("sweep: training point %d: %s", i, " ".join(points[i]))
            hist, sec = _train_point(cfgs[i].to_dict(), str(runs[i]))
            histories[i] = (hist, sec, False)
    elif todo:
        # spawn: a forked child would inherit torch's thread pools and locks.
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futs = {i: pool.submit(_train_point, cfgs[i].to_dict(), str(runs[i])) for i in todo}
            for i, fut in futs.items():
                hist, sec = fut.result()
                histories[i] = (hist, sec, False)
    for i, p in enumerate(points):
        hist, sec, reused = histories[i]
        last, best, score = summarize_history(hist, criterion)
        result.points.append(SweepPoint(i, p, str(runs[i]), last, best, score, round(sec, 1), reused))
    result.chosen = max(range(len(result.points)), key=lambda i: (result.points[i].score, -i))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "sweep.json", json.dumps(result.to_dict(), indent=2) + "\n")
    atomic_write_text(out / "sweep.md", format_table(result))
    return result


def format_table(result: SweepResult) -> str:
    """The sweep as a markdown table (the chosen row in bold)."""
    keys = [k for k, _ in result.grid]
    head = (["#"] + keys + ["val R1 (last)", "val mAP (last)", "best epoch", "val R1 (best)",
                            "val mAP (best)", "score", "train s"])
    lines = [f"Preset `{result.preset}`, fixed `{' '.join(result.fixed) or '-'}`; "
             f"{len(result.points)} points; validation: {result.val_ids} ids held out of the "
             f"training ids; score = (val rank-1 + val mAP) / 2 at the "
             f"{'last' if result.criterion == 'last' else 'best'} epoch.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in result.points:
        vals = [v.split("=", 1)[1] for v in p.overrides]
        cells = ([str(p.index)] + vals
                 + [f"{p.last['val_rank1']:.1f}", f"{p.last['val_mAP']:.1f}", str(p.best["epoch"]),
                    f"{p.best['val_rank1']:.1f}", f"{p.best['val_mAP']:.1f}", f"{p.score:.1f}",
                    "reused" if p.reused else f"{p.seconds:.0f}"])
        if p.index == result.chosen:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    if result.chosen is not None:
        lines += ["", f"Chosen: `{' '.join(result.points[result.chosen].overrides)}`."]
    return "\n".join(lines) + "\n"
