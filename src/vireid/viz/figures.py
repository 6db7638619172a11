"""The paper's qualitative figures, as PNG files (matplotlib's Agg canvas without pyplot, so
the process's backend is left alone; atomic writes).

* Fig. 2 — :func:`plot_tsne_panels`: t-SNE of common-space global features G of 10 identities,
  one colour per identity, marker per modality (dot = RGB, cross = IR), one panel per model
  (e.g. unshared vs shared stage 3–4 embedding), side by side.
* Fig. 4 — :func:`contrastive_maps` / :func:`plot_contrastive_maps`: for an IR query I and RGB
  gallery images R, the contrastive correlation maps F_R^I = K_RI ⊗ F_R and F_I^R = K_RI ⊗ F_I
  (mean over the n kernels, bilinearly upsampled to the image), overlaid on the images, with
  D_RI per pair. All maps of one figure share one colour scale so responses are comparable
  across pairs, which is what the paper's figure argues from.
* Fig. 5 — :func:`plot_ranked_lists`: query + top-k gallery thumbnails, green border = correct
  identity, red = wrong.
* CMC curves of several runs — :func:`plot_cmc` (delegates to :mod:`vireid.viz.curves`).

:func:`make_figures` runs all of them from a checkpoint and a dataset folder (``vireid figures``).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

import matplotlib
import numpy as np
import torch
import torch.nn.functional as nnf
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from vireid.errors import DataError
from vireid.utils.atomic import atomic_path
from vireid.viz.curves import (mode_label, new_figure, plot_cmc_curves, plot_metric_sweep,
                               save_figure)
from vireid.viz.tsne import tsne

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
FIGURES = ("tsne", "maps", "ranked")


# --------------------------------------------------------------------------- Fig. 2: t-SNE
def select_identities(pids: np.ndarray, modalities: Sequence[str], num_ids: int = 10,
                      per_modality: int = 10, seed: int = 0) -> np.ndarray:
    """Rows for a t-SNE plot: ``num_ids`` identities that have both modalities (seeded random
    choice, as the paper picks 10 random test persons), at most ``per_modality`` images of each
    modality per identity. Returns sorted row indices."""
    pids = np.asarray(pids)
    mods = np.asarray(modalities)
    both = sorted(set(pids[mods == "rgb"].tolist()) & set(pids[mods == "ir"].tolist()))
    if not both:
        raise DataError("t-SNE needs identities with images of both modalities; found none")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(both, size=min(num_ids, len(both)), replace=False)
    rows: list[int] = []
    for pid in sorted(chosen.tolist()):
        for m in ("rgb", "ir"):
            idx = np.flatnonzero((pids == pid) & (mods == m))
            if len(idx) > per_modality:
                idx = np.sort(rng.choice(idx, size=per_modality, replace=False))
            rows.extend(idx.tolist())
    return np.array(sorted(rows), dtype=np.int64)


def plot_tsne_panels(panels: Mapping[str, tuple[np.ndarray, np.ndarray, Sequence[str]]],
                     path: PathLike, perplexity: float = 15.0, seed: int = 0,
                     iterations: int = 1000) -> Path:
    """One t-SNE panel per entry: ``{title: (G (n, C), pids (n,), modalities (n,))}``.

    Colour = identity (consistent across panels), marker: "o" RGB, "x" IR. G is
    L2-normalised before t-SNE (the simplified mode compares G by cosine).
    """
    if not panels:
        raise ValueError("plot_tsne_panels: no panels given")
    all_ids = sorted({int(p) for _, pids, _ in panels.values() for p in np.asarray(pids)})
    cmap = matplotlib.colormaps["tab10" if len(all_ids) <= 10 else "tab20"]
    color = {pid: cmap(i % cmap.N) for i, pid in enumerate(all_ids)}
    fig, axes = new_figure(1, len(panels), figsize=(5.0 * len(panels), 4.8), squeeze=False)
    for ax, (title, (g, pids, mods)) in zip(axes[0], panels.items()):
        g = np.asarray(g, dtype=np.float64)
        g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        y = tsne(g, perplexity=perplexity, seed=seed, iterations=iterations)
        pids = np.asarray(pids)
        mods = np.asarray(mods)
        for pid in all_ids:
            for m, marker in (("rgb", "o"), ("ir", "x")):
                sel = (pids == pid) & (mods == m)
                if sel.any():
                    ax.scatter(y[sel, 0], y[sel, 1], c=[color[pid]], marker=marker, s=28,
                               linewidths=1.4)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], marker="o", linestyle="", color="k", label="RGB (visible)"),
               Line2D([], [], marker="x", linestyle="", color="k", label="IR")]
    axes[0][-1].legend(handles=handles, loc="best", fontsize=8)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- Fig. 4: maps
@torch.no_grad()
def contrastive_maps(ccn: torch.nn.Module, f_rgb: torch.Tensor, f_ir: torch.Tensor
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean contrastive correlation maps of pairs (R_m, I_m).

    f_rgb, f_ir: (M, C, h, w) aligned pairs. Returns (map_R (M, h', w'), map_I (M, h', w'),
    D (M,)): map_R = mean_k (K_RI ⊗ F_R)[k] scaled by the CCN's corr_scale, likewise map_I,
    and D_RI of each pair. Uses ``ccn.kernels``, ``ccn.correlate``, ``ccn.logits``.
    """
    kab = (ccn.kernels(f_rgb) - ccn.kernels(f_ir)).abs()
    scale = float(getattr(ccn, "corr_scale", 1.0))
    map_r = ccn.correlate(f_rgb, kab).mean(1) * scale
    map_i = ccn.correlate(f_ir, kab).mean(1) * scale
    idx = torch.arange(f_rgb.shape[0])
    la, lb = ccn.logits(f_rgb, f_ir, idx, idx)
    d = 0.5 * (torch.sigmoid(la) + torch.sigmoid(lb))
    return map_r.cpu().numpy(), map_i.cpu().numpy(), d.cpu().numpy()


def _upsample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[None, None]
    return nnf.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def plot_contrastive_maps(query_img: np.ndarray, gallery_imgs: Sequence[np.ndarray],
                          maps_query: np.ndarray, maps_gallery: np.ndarray,
                          scores: Sequence[float], correct: Sequence[bool], path: PathLike,
                          alpha: float = 0.5) -> Path:
    """Fig. 4 layout, one row per gallery image R_m:
    [I | F_I^R over I | R_m | F_R^I over R_m], titled with D_RI and positive/negative.

    query_img: (H, W, 3) uint8; gallery_imgs: M × (H, W, 3) uint8; maps_query (F_I^R) and
    maps_gallery (F_R^I): (M, h', w'); scores: D_RI (M,); correct: same identity or not.
    """
    m = len(gallery_imgs)
    if m == 0:
        raise ValueError("plot_contrastive_maps: no gallery images")
    vmax = float(max(np.max(maps_query), np.max(maps_gallery)))
    vmin = float(min(np.min(maps_query), np.min(maps_gallery)))
    fig, axes = new_figure(m, 4, figsize=(6.4, 2.6 * m), squeeze=False)
    hq, wq = query_img.shape[:2]
    im = None
    for r in range(m):
        g = gallery_imgs[r]
        hg, wg = g.shape[:2]
        cells = [(query_img, None, "IR query I"),
                 (query_img, _upsample(maps_query[r], (hq, wq)), "F_I^R on I"),
                 (g, None, f"R{r + 1} ({'pos' if correct[r] else 'neg'})"),
                 (g, _upsample(maps_gallery[r], (hg, wg)), f"F_R^I, D={scores[r]:.3f}")]
        for ax, (img, heat, title) in zip(axes[r], cells):
            ax.imshow(img)
            if heat is not None:
                im = ax.imshow(heat, cmap="jet", alpha=alpha, vmin=vmin, vmax=vmax)
            ax.set_title(title, fontsize=8, color="green" if (heat is None and "pos" in title)
                         else "red" if (heat is None and "neg" in title) else "black")
            ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="mean correlation")
    return save_figure(fig, path)


# --------------------------------------------------------------------------- Fig. 5: ranks
def plot_ranked_lists(query_imgs: Sequence[np.ndarray], ranked_imgs: Sequence[Sequence[np.ndarray]],
                      correct: Sequence[Sequence[bool]], path: PathLike,
                      query_titles: Optional[Sequence[str]] = None) -> Path:
    """One row per query: the query, then its top-k gallery images left to right, each with a
    green (correct identity) or red (wrong) border.

    query_imgs: Q × (H, W, 3) uint8; ranked_imgs: Q × k images; correct: Q × k booleans.
    """
    q = len(query_imgs)
    if q == 0:
        raise ValueError("plot_ranked_lists: no queries")
    k = max(len(r) for r in ranked_imgs)
    fig, axes = new_figure(q, k + 1, figsize=(1.1 * (k + 1), 2.3 * q), squeeze=False)
    for i in range(q):
        ax = axes[i][0]
        ax.imshow(query_imgs[i])
        ax.set_title(query_titles[i] if query_titles else "query", fontsize=7)
        ax.axis("off")
        for j in range(k):
            ax = axes[i][j + 1]
            ax.axis("off")
            if j >= len(ranked_imgs[i]):
                continue
            img = ranked_imgs[i][j]
            ax.imshow(img)
            h, w = img.shape[:2]
            ok = bool(correct[i][j])
            ax.add_patch(Rectangle((0, 0), w - 1, h - 1, fill=False, linewidth=3,
                                   edgecolor="limegreen" if ok else "red"))
            ax.set_title(f"{j + 1}{'' if ok else ' ✗'}", fontsize=7)
    return save_figure(fig, path)


def plot_cmc(curves: Mapping[str, Sequence[float]], path: PathLike, title: str = "CMC") -> Path:
    """CMC curves (rank-k in percent) of several runs on one plot."""
    return plot_cmc_curves(curves, path, title=title)


def _read_result_json(path: Path, option: str, expected: str) -> object:
    """The parsed JSON at ``path``; DataError naming ``option`` and what was expected."""
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{option}: expected {expected} at {path}, found: {e}") from e


def cmc_curves_from_results(paths: Sequence[PathLike],
                            select: Optional[Sequence[str]] = None) -> dict[str, list[float]]:
    """Collect the mean CMC curves (rank 1..20, percent) stored in result JSON files.

    Accepts ``vireid reproduce`` table JSON files (one curve per run and scoring mode, labelled
    ``variant-S`` / ``variant-F`` / ``variant-R``) and ``vireid eval --json`` results (a
    top-level ``cmc``, or ``{mode: result}``; labelled by the file name). ``select`` keeps only
    these labels (in the given order).
    """
    curves: dict[str, list[float]] = {}
    for p in paths:
        p = Path(p)
        obj = _read_result_json(p, "--cmc", "a result JSON file")
        if isinstance(obj, dict) and "runs" in obj:  # a reproduce table
            for name, run in obj["runs"].items():
                for mode, res in (run.get("eval") or {}).items():
                    if isinstance(res, dict) and res.get("cmc"):
                        curves[f"{name}-{mode_label(mode, res)}"] = [float(v) for v in res["cmc"]]
        elif isinstance(obj, dict) and obj.get("cmc"):
            curves[p.stem] = [float(v) for v in obj["cmc"]]
        elif isinstance(obj, dict):
            for mode, res in obj.items():
                if isinstance(res, dict) and res.get("cmc"):
                    curves[f"{p.stem}-{mode_label(mode, res)}"] = [float(v) for v in res["cmc"]]
    if select:
        missing = [s for s in select if s not in curves]
        if missing:
            raise DataError(f"--cmc-runs: {', '.join(missing)} not found; available: {', '.join(curves)}")
        curves = {s: curves[s] for s in select}
    if not curves:
        raise DataError(f"--cmc: no CMC curve found in {', '.join(map(str, paths))}")
    return curves


def plot_sweep_file(path: PathLike, out_dir: PathLike) -> dict[str, Path]:
    """``vireid figures --sweep``: a ``vireid reproduce`` fig3/table7 JSON drawn as accuracy
    against the varied value (:func:`vireid.viz.curves.plot_metric_sweep`), to
    ``out_dir/<table>.png``."""
    p = Path(path)
    obj = _read_result_json(p, "--sweep", "a vireid reproduce JSON file")
    rows = obj.get("rows") if isinstance(obj, dict) else None
    if not isinstance(rows, list) or not any(isinstance(r, dict) and r.get("axis") for r in rows):
        raise DataError(f"--sweep: expected a fig3 or table7 result of vireid reproduce (rows with "
                        f"an 'axis' value) at {p}, found none")
    over = "training seeds" if obj.get("std_over") == "seeds" else "trials"
    title = f"{obj.get('title', obj.get('table', ''))} (± std over {over})"
    table = str(obj.get("table", "sweep"))
    return {"sweep": plot_metric_sweep(rows, Path(out_dir) / f"{table}.png", title=title)}


def compact_png(path: PathLike, colors: int = 256) -> Path:
    """Re-encode a PNG with an adaptive palette of ``colors`` colours (atomically), which
    shrinks the photo-like figures (image thumbnails, heat-map overlays) several-fold so they
    can live in the repository's docs; the figure itself is unchanged to the eye."""
    from PIL import Image

    path = Path(path)
    with Image.open(path) as im:
        pal = im.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    with atomic_path(path) as tmp:
        pal.save(tmp, format="PNG", optimize=True)
    return path
