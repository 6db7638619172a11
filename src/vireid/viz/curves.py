"""Loss curves and CMC curves as PNG files (matplotlib's Agg canvas, atomic writes).

Figures are ``matplotlib.figure.Figure`` objects drawn by their own ``FigureCanvasAgg``, never
through pyplot: importing or calling this module leaves the process's matplotlib backend as it
was (a notebook keeps its inline plots), needs no display, and each figure is freed with its
last reference (pyplot would keep it until closed).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vireid.utils.atomic import atomic_path

PathLike = Union[str, os.PathLike]

#: Loss components drawn when present in the step records, in this order.
LOSS_KEYS = ("loss", "pbce", "id", "vl", "rkl", "kvl", "wrt", "triplet")


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float],
               squeeze: bool = True) -> tuple[Figure, Any]:
    """A figure with an ``nrows`` × ``ncols`` grid of axes, drawn by the Agg canvas.

    Returns ``(fig, axes)`` like ``pyplot.subplots`` (``axes``: one Axes, or an array of them,
    2-D when ``squeeze`` is False), but the figure is not registered with pyplot and no
    backend is selected, so nothing global changes.
    """
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas: savefig renders PNG with Agg
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def save_figure(fig: Figure, path: PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG via a temp file in the same folder and ``os.replace``."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    return path


def plot_loss_curves(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: PathLike,
                     title: str = "training loss") -> Path:
    """Plot loss against iteration for one or more runs.

    runs: ``{label: step records}``; a record has ``"iteration"`` and loss values
    (``"loss"`` and optional components such as ``"pbce"``, ``"id"``). The total loss is
    drawn solid, components dashed. Per-epoch records (``"type": "epoch"``) are skipped.
    """
    fig, ax = new_figure(figsize=(7, 4))
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    part_styles = iter(["--", ":", "-.", (0, (5, 1)), (0, (1, 3))] * 4)
    for i, (label, records) in enumerate(runs.items()):
        steps = [r for r in records if r.get("type", "step") == "step"]
        if not steps:
            continue
        x = np.array([r["iteration"] for r in steps])
        color = colors[i % len(colors)]
        for key in LOSS_KEYS:
            if key not in steps[0]:
                continue
            y = np.array([r.get(key, np.nan) for r in steps], dtype=float)
            style = "-" if key == "loss" else next(part_styles)
            name = f"{label}" if key == "loss" else f"{label}: {key}"
            ax.plot(x, y, linestyle=style, color=color, alpha=1.0 if key == "loss" else 0.6,
                    linewidth=1.6 if key == "loss" else 1.0, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def has_diagnostics(records: Sequence[Mapping[str, Any]]) -> bool:
    """Whether ``records`` (metrics.jsonl) hold any of what :func:`plot_diagnostics` draws."""
    return any(k.startswith("grad_") or k in ("acc_pos", "acc_neg", "val_rank1")
               for r in records for k in r)


def plot_diagnostics(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: PathLike) -> Path:
    """Three panels from metrics.jsonl records of one or more runs: the gradient norm each
    loss part sends into the backbone (``grad_<part>``, log scale), the PBCE pair accuracy on
    positive and negative pairs (``acc_pos``, ``acc_neg``) against iteration, and the held-out
    rank-1 / mAP of every checkpoint (``val_rank1``, ``val_mAP`` of epoch records)."""
    fig, axes = new_figure(1, 3, figsize=(15, 4))
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, records) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        steps = [r for r in records if r.get("type", "step") == "step"]
        grads = sorted({k for r in steps for k in r if k.startswith("grad_")})
        for style, key in zip(["-", "--", ":", "-."] * 4, grads):
            pts = [(r["iteration"], r[key]) for r in steps if key in r and r[key] > 0]
            if pts:
                x, y = zip(*pts)
                axes[0].semilogy(x, y, style, color=color, label=f"{label}: {key[5:]}")
        for style, key in (("-", "acc_pos"), ("--", "acc_neg")):
            pts = [(r["iteration"], 100 * r[key]) for r in steps if key in r]
            if pts:
                x, y = zip(*pts)
                axes[1].plot(x, y, style, color=color, label=f"{label}: {key[4:]} pairs")
        val = [r for r in records if r.get("type") == "epoch" and "val_rank1" in r]
        if val:
            axes[2].plot([r["epoch"] for r in val], [r["val_rank1"] for r in val], "-o",
                         color=color, markersize=3, label=f"{label}: rank-1")
            axes[2].plot([r["epoch"] for r in val], [r.get("val_mAP", np.nan) for r in val],
                         "--s", color=color, markersize=3, label=f"{label}: mAP")
    for ax, title, xl, yl in ((axes[0], "gradient norm into the backbone", "iteration", "‖∇θ‖"),
                              (axes[1], "PBCE pair accuracy", "iteration", "%"),
                              (axes[2], "held-out validation (simplified)", "epoch", "%")):
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_cmc_curves(curves: Mapping[str, Sequence[float]], path: PathLike,
                    title: str = "CMC", max_rank: int = 20) -> Path:
    """Plot CMC curves (rank-k accuracy in percent, k = 1..len) for several methods.

    curves: ``{label: cmc}`` with ``cmc[k-1]`` = rank-k in percent.
    """
    fig, ax = new_figure(figsize=(6, 4))
    for label, cmc in curves.items():
        y = np.asarray(cmc, dtype=float)[:max_rank]
        ax.plot(np.arange(1, len(y) + 1), y, marker="o", markersize=3, label=label)
    ax.set_xlabel("rank")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("matching rate (%)")
    ax.set_title(title)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def plot_metric_sweep(rows: Sequence[Mapping[str, Any]], path: PathLike, title: str = "",
                      metrics: Sequence[str] = ("rank1", "mAP")) -> Path:
    """Metrics of a one-value sweep (the paper's Fig. 3: accuracy against stride_v), one line
    per scoring mode, with ± std error bars (over seeds or trials, as the table has them).

    rows: ``vireid reproduce`` rows holding ``axis`` ({"label", "value"}), ``scoring`` and
    ``ours`` ({metric: mean, metric_std: std}).
    """
    pts = [r for r in rows if isinstance(r.get("axis"), Mapping) and r.get("ours")]
    if not pts:
        raise ValueError("expected table rows with an 'axis' value (a fig3 or table7 result), "
                         "found none")
    label = pts[0]["axis"].get("label", "value")
    fig, axes = new_figure(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for mode in dict.fromkeys(r.get("scoring", "") for r in pts):
            line = sorted((float(r["axis"]["value"]), r["ours"].get(metric), r["ours"].get(f"{metric}_std", 0.0))
                          for r in pts if r.get("scoring", "") == mode and metric in r["ours"])
            if not line:
                continue
            x, y, e = (np.asarray(v, dtype=float) for v in zip(*line))
            ax.errorbar(x, y, yerr=e, marker="o", markersize=4, capsize=3, label=mode)
        ax.set_xlabel(label)
        if all(float(r["axis"]["value"]).is_integer() for r in pts):
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def mode_label(mode: str, result: Any) -> str:
    """The short label of a scoring mode's curve ("S", "F", a plugin's): the ``"label"`` an
    evaluation result carries, or, for results written before labels were stored, the
    registered mode's label (the mode's name when it is not registered)."""
    if isinstance(result, Mapping) and result.get("label"):
        return str(result["label"])
    # Late: only old result files need the registry, and importing it loads torch.
    from vireid.scoring.scorers import SCORING_MODES

    return (SCORING_MODES.get(mode).label or mode) if mode in SCORING_MODES else mode
