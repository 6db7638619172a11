"""Figures drawn from a checkpoint on its dataset's test identities (paper Figs. 2, 4, 5):
load the model, extract features of a subsample of test images, and hand them to the
drawing functions of :mod:`vireid.viz.figures`."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as nnf

from vireid.data.registry import get_dataset
from vireid.engine.checkpoint import load_model_from_checkpoint
from vireid.engine.features import extract_features, open_images
from vireid.errors import ConfigError, DataError
from vireid.utils.atomic import OutputWriteError, describe_os_error
from vireid.viz.figures import (FIGURES, compact_png, contrastive_maps, plot_contrastive_maps,
                                plot_ranked_lists, plot_tsne_panels, select_identities)

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def _subsample(records: list, per_id: int, rng: np.random.Generator) -> list:
    by: dict[int, list] = {}
    for r in records:
        by.setdefault(r.pid, []).append(r)
    out = []
    for pid in sorted(by):
        rs = by[pid]
        if len(rs) > per_id:
            rs = [rs[i] for i in sorted(rng.choice(len(rs), per_id, replace=False))]
        out.extend(rs)
    return out


def make_figures(checkpoint: PathLike, data_root: PathLike, out_dir: PathLike,
                 which: Sequence[str] = FIGURES, compare_checkpoint: Optional[PathLike] = None,
                 per_id: int = 10, num_queries: int = 4, topk: int = 10, seed: int = 0,
                 device: str = "cpu", compact: bool = False) -> dict[str, Path]:
    """Draw the requested figures for the model of ``checkpoint`` on its dataset's test ids.

    ``tsne``: Fig. 2 with one panel for this model (two when ``compare_checkpoint`` is given,
    e.g. an unshared-embedding model). ``maps``: Fig. 4 for one random IR query against 3
    positive and 6 negative RGB images (fewer if the data has fewer). ``ranked``: Fig. 5 for
    ``num_queries`` IR queries, simplified-mode ranking (cosine of G), top ``topk``.
    Returns {figure name: PNG path}. At most ``per_id`` images per identity and modality are used.
    ``compact``: re-encode each PNG with a 256-colour palette (:func:`compact_png`).
    """
    bad = [w for w in which if w not in FIGURES]
    if bad:
        raise DataError(f"--which: unknown figure(s) {', '.join(bad)}; expected any of {', '.join(FIGURES)}")
    if num_queries < 1 or topk < 1 or per_id < 1:
        raise ConfigError(f"figures: expected num_queries, topk and per_id ≥ 1, found "
                          f"{num_queries}, {topk}, {per_id}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"-o {out_dir}: expected a folder for the PNG files, found a file")
    model, cfg, _ = load_model_from_checkpoint(checkpoint, device)
    try:  # after loading the model: a bad checkpoint leaves no empty folder behind
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot create the figure folder {out_dir}: "
                               f"{describe_os_error(exc)}") from exc
    rng = np.random.default_rng(seed)
    rgb, ir = get_dataset(cfg.data.dataset).test_images(data_root, cfg.data.trial)
    records = _subsample(rgb, per_id, rng) + _subsample(ir, per_id, rng)
    size = (cfg.data.height, cfg.data.width)
    images = open_images(data_root, records, size, use_cache=False)
    feats = extract_features(model, records, images, batch_size=cfg.eval.batch_size, device=device)
    mods = np.array(feats.modalities)
    made: dict[str, Path] = {}

    if "tsne" in which:
        rows = select_identities(feats.pids, feats.modalities, 10, per_id, seed)
        label = f"{cfg.name}: shared {cfg.model.shared_stages}"
        panels = {label: (feats.G[rows].numpy(), feats.pids[rows], [feats.modalities[i] for i in rows])}
        if compare_checkpoint is not None:
            m2, cfg2, _ = load_model_from_checkpoint(compare_checkpoint, device)
            f2 = extract_features(m2, records, images, batch_size=cfg2.eval.batch_size, device=device)
            panels = {f"{cfg2.name}: shared {cfg2.model.shared_stages}":
                      (f2.G[rows].numpy(), f2.pids[rows], [f2.modalities[i] for i in rows]), **panels}
        made["tsne"] = plot_tsne_panels(panels, out_dir / "fig2_tsne.png", seed=seed)

    q_rows = np.flatnonzero(mods == "ir")
    g_rows = np.flatnonzero(mods == "rgb")
    if ("maps" in which or "ranked" in which) and (len(q_rows) == 0 or len(g_rows) == 0):
        raise DataError("figures need IR queries and RGB gallery images among the test records")

    if "maps" in which:
        q = int(rng.choice(q_rows))
        pos = [r for r in g_rows if feats.pids[r] == feats.pids[q]][:3]
        neg_all = [r for r in g_rows if feats.pids[r] != feats.pids[q]]
        neg = [int(x) for x in rng.choice(neg_all, size=min(6, len(neg_all)), replace=False)] if neg_all else []
        gal = pos + neg
        f_r = feats.F[gal].to(device)
        f_i = feats.F[[q] * len(gal)].to(device)
        map_r, map_i, d = contrastive_maps(model.ccn, f_r, f_i)
        made["maps"] = plot_contrastive_maps(
            images.batch([q])[0], list(images.batch(gal)), map_i, map_r, d.tolist(),
            [feats.pids[r] == feats.pids[q] for r in gal], out_dir / "fig4_contrastive_maps.png")

    if "ranked" in which:
        qs = np.sort(rng.choice(q_rows, size=min(num_queries, len(q_rows)), replace=False))
        qg = nnf.normalize(feats.G[qs], dim=1)
        gg = nnf.normalize(feats.G[g_rows], dim=1)
        order = torch.argsort(-(qg @ gg.T), dim=1)[:, :topk].numpy()
        ranked = [list(images.batch(g_rows[o])) for o in order]
        correct = [[feats.pids[g_rows[j]] == feats.pids[qi] for j in o] for qi, o in zip(qs, order)]
        made["ranked"] = plot_ranked_lists(list(images.batch(qs)), ranked, correct,
                                           out_dir / "fig5_ranked.png",
                                           [f"query id {feats.pids[i]}" for i in qs])
    for name, p in made.items():
        if compact:
            compact_png(p)
        log.info("wrote %s figure: %s", name, p)
    return made
