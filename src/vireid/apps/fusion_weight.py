"""Choose the ``fused`` mode's weight w on a run's held-out validation ids (issue 24, 1a).

A run trained with ``data.val_ids=K`` holds K training ids out (:func:`carve_validation`, by
``train.seed``; the checkpoint lists them). For each w of a grid, the fused distance
(:func:`vireid.scoring.fusion.fuse`) ranks the held-out ids' RGB images for each of their IR
images, as the training loop's validation does (:func:`vireid.engine.hooks.validate_rank1`:
IR query → RGB gallery, every image, textbook CMC), and w is chosen by the criterion of
``vireid sweep``: (val rank-1 + val mAP) / 2, equal scores by the first w of the grid. No
test id is read. The cosine and D_RI matrices are computed once for the whole grid.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch

from vireid.engine.checkpoint import load_model_from_checkpoint
from vireid.engine.features import extract_features, open_images
from vireid.engine.train_data import plan_split
from vireid.errors import CheckpointError, ConfigError
from vireid.evaluation.metrics import eval_regdb
from vireid.scoring.fusion import check_fusion_weight, fuse
from vireid.scoring.inputs import as_features
from vireid.scoring.scorers import ScoringContext
from vireid.utils.runtime import resolve_device

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
#: The grid of ``vireid eval --choose-fusion-weight`` when none is given: 0, 0.1, …, 1.
DEFAULT_GRID = tuple(round(0.1 * i, 1) for i in range(11))


def parse_weight_grid(text: str) -> list[float]:
    """"0,0.25,0.5" or "LO:HI:STEP" (both ends included) -> sorted distinct weights in [0, 1].

    Raises:
        ConfigError: not numbers, a step ≤ 0, or a weight outside [0, 1].
    """
    try:
        if ":" in text:
            lo, hi, step = (float(x) for x in text.split(":"))
            if step <= 0 or hi < lo:
                raise ConfigError(f"fusion weight grid: expected LO:HI:STEP with LO ≤ HI and "
                                  f"STEP > 0, found {text!r}")
            n = int(np.floor((hi - lo) / step + 1e-9))
            values = [round(lo + i * step, 10) for i in range(n + 1)]
        else:
            values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"fusion weight grid: expected numbers like 0,0.5,1 or 0:1:0.1, "
                          f"found {text!r}") from None
    if not values:
        raise ConfigError(f"fusion weight grid: expected at least one weight, found {text!r}")
    return sorted({check_fusion_weight(v) for v in values})


def select_weight(rows: Sequence[dict[str, float]]) -> int:
    """Index of the chosen row of ``rows`` ({"w", "rank1", "mAP"}, in grid order): the
    highest (rank1 + mAP) / 2, equal scores by the first row (``vireid sweep``'s rule)."""
    if not rows:
        raise ConfigError("fusion weight: expected at least one evaluated weight")
    return max(range(len(rows)), key=lambda i: ((rows[i]["rank1"] + rows[i]["mAP"]) / 2, -i))


def choose_fusion_weight(checkpoint: PathLike, data_root: PathLike,
                         weights: Sequence[float] = DEFAULT_GRID, *,
                         device: Union[str, torch.device] = "cpu",
                         batch_size: int | None = None, chunk_size: int | None = None,
                         use_cache: bool = True) -> dict[str, Any]:
    """Evaluate the fused mode at each weight on the run's held-out validation ids.

    Returns ``{"checkpoint", "val_ids" (count), "val_queries", "val_gallery", "criterion",
    "grid": [{"w", "rank1", "mAP", "score"}] (percent), "chosen" (w), "seconds"}``.

    Raises:
        ConfigError: the run holds no validation ids (``data.val_ids=0``), or a weight is
            outside [0, 1].
        CheckpointError: the model has no CCN, or the ids carved from the data now are not
            the ones the checkpoint lists.
    """
    grid = sorted({check_fusion_weight(w) for w in weights})
    if not grid:
        raise ConfigError("fusion weight: expected at least one weight in the grid")
    t0 = time.perf_counter()
    device = resolve_device(str(device))
    model, cfg, meta = load_model_from_checkpoint(checkpoint, device)
    if getattr(model, "ccn", None) is None:
        raise CheckpointError(f"{meta['path']}: the fused mode needs the model's CCN, which "
                              f"this model ({cfg.loss.kind}) does not have")
    if cfg.data.val_ids < 2:
        raise ConfigError(f"{meta['path']}: choosing the fusion weight needs held-out "
                          f"validation ids, but the run was trained with data.val_ids="
                          f"{cfg.data.val_ids}; train it with data.val_ids=K (e.g. 60)")
    plan = plan_split(cfg, data_root)
    listed = (meta.get("extra") or {}).get("val_pids")
    if listed is not None and sorted(int(p) for p in listed) != sorted(plan.val):
        raise CheckpointError(f"{meta['path']}: the validation ids carved from {data_root} "
                              f"are not those the run held out (another data folder?)")
    vs = set(plan.val)
    query = [r for r in plan.full.ir if r.pid in vs]
    gallery = [r for r in plan.full.rgb if r.pid in vs]
    size = (cfg.data.height, cfg.data.width)
    bs = int(batch_size or cfg.eval.batch_size)
    feats = []
    for records in (query, gallery):
        images = open_images(data_root, records, size, use_cache=use_cache,
                             cache_dir=cfg.data.cache_dir or None)
        feats.append(extract_features(model, records, images, bs, False, device))
    fq, fg = feats
    q, g = as_features(fq), as_features(fg)
    ctx = ScoringContext(ccn=model.ccn, chunk_size=int(chunk_size or cfg.eval.chunk_size),
                         device=device)
    with torch.no_grad():
        S = ctx.cosine(q, g)
        D = ctx.d_ri(q, g)
    rows = []
    for w in grid:
        cmc, m_ap, _ = eval_regdb(fuse(S, D, w).numpy(), fq.pids, fg.pids)
        r1, mp = float(cmc[0]) * 100, float(m_ap) * 100
        rows.append({"w": w, "rank1": r1, "mAP": mp, "score": (r1 + mp) / 2})
    best = select_weight(rows)
    log.info("fusion weight: w=%g chosen on %d validation ids (val rank-1 %.1f, mAP %.1f)",
             grid[best], len(plan.val), rows[best]["rank1"], rows[best]["mAP"])
    return {"checkpoint": str(meta["path"]), "val_ids": len(plan.val),
            "val_queries": len(query), "val_gallery": len(gallery),
            "criterion": "(val rank-1 + val mAP) / 2, ties by the first weight",
            "grid": rows, "chosen": grid[best],
            "seconds": round(time.perf_counter() - t0, 2)}


def format_choice(choice: dict[str, Any]) -> str:
    """The grid of :func:`choose_fusion_weight` as a markdown table (the chosen row bold)."""
    lines = [f"**fusion weight on {choice['val_ids']} validation ids "
             f"({choice['val_queries']} IR queries, {choice['val_gallery']} RGB gallery "
             f"images), percent**", "", "| w | val R1 | val mAP | score |", "|---|---|---|---|"]
    for r in choice["grid"]:
        b = "**" if r["w"] == choice["chosen"] else ""
        lines.append(f"| {b}{r['w']:g}{b} | {r['rank1']:.1f} | {r['mAP']:.1f} | "
                     f"{r['score']:.2f} |")
    return "\n".join(lines)
