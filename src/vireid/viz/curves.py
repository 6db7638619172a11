"""Loss curves and CMC curves as PNG files (matplotlib, Agg backend, atomic writes)."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from vireid.utils.atomic import atomic_path  # noqa: E402

PathLike = Union[str, os.PathLike]

#: Loss components drawn when present in the step records, in this order.
LOSS_KEYS = ("loss", "pbce", "id", "vl", "rkl", "kvl")


def save_figure(fig: "matplotlib.figure.Figure", path: PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG via a temp file in the same folder and ``os.replace``; closes it."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_loss_curves(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: PathLike,
                     title: str = "training loss") -> Path:
    """Plot loss against iteration for one or more runs.

    runs: ``{label: step records}``; a record has ``"iteration"`` and loss values
    (``"loss"`` and optional components such as ``"pbce"``, ``"id"``). The total loss is
    drawn solid, components dashed. Per-epoch records (``"type": "epoch"``) are skipped.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
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
            ax.plot(x, y, style, color=color, alpha=1.0 if key == "loss" else 0.6,
                    linewidth=1.6 if key == "loss" else 1.0, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_cmc_curves(curves: Mapping[str, Sequence[float]], path: PathLike,
                    title: str = "CMC", max_rank: int = 20) -> Path:
    """Plot CMC curves (rank-k accuracy in percent, k = 1..len) for several methods.

    curves: ``{label: cmc}`` with ``cmc[k-1]`` = rank-k in percent.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
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
