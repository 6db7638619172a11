"""Choose a fusion mode's weight w (and depth K) on a run's held-out validation ids (issue 24,
1a).

A run trained with ``data.val_ids=K`` holds K training ids out (:func:`carve_validation`, by
``train.seed``; the checkpoint lists them). For each point of a grid, the mode's distance
(``fused``: :func:`vireid.scoring.fusion.fuse` over the whole gallery; ``fused-rerank``: the
same on each query's simplified top-K) ranks the held-out ids' RGB images for each of their IR
images, as the training loop's validation does (:func:`vireid.engine.hooks.validate_rank1`:
IR query → RGB gallery, every image, textbook CMC), and the point is chosen by the criterion
of ``vireid sweep``: (val rank-1 + val mAP) / 2, equal scores by the first point of the grid.
The grid is the weights for a mode without a depth, and weights × depths (w ascending, then K
ascending) for a mode with one (``uses_topk``). No test id is read. The cosine and D_RI
matrices are computed once for the whole grid (a memo :class:`ScoringContext`); every grid
point is scored through the mode's registry entry.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import torch

from vireid.engine.checkpoint import load_model_from_checkpoint
from vireid.engine.features import extract_features, open_images
from vireid.engine.train_data import plan_split
from vireid.errors import CheckpointError, ConfigError
from vireid.evaluation.metrics import eval_regdb
from vireid.scoring.fusion import check_fusion_weight
from vireid.scoring.inputs import as_features
from vireid.scoring.scorers import SCORING_MODES, ScoringContext, get_scoring
from vireid.utils.runtime import resolve_device

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
#: The grid of ``vireid eval --choose-fusion-weight`` when none is given: 0, 0.1, …, 1.
DEFAULT_GRID = tuple(round(0.1 * i, 1) for i in range(11))
#: The depths K of the grid of a top-K mode (``fused-rerank``) when none are given.
DEFAULT_TOPKS = (10, 20, 50)
#: The mode :func:`choose_fusion_weight` chooses for unless told (and ``vireid eval
#: --scoring all`` chooses for).
DEFAULT_MODE = "fused"


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


def parse_topk_grid(text: str) -> list[int]:
    """"10,20,50" -> sorted distinct depths K ≥ 1.

    Raises:
        ConfigError: not integers, a K < 1, or none.
    """
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"top-K grid: expected integers like 10,20,50, found {text!r}") from None
    if not values:
        raise ConfigError(f"top-K grid: expected at least one K, found {text!r}")
    return check_topks(values)


def check_topks(topks: Sequence[int]) -> list[int]:
    """``topks`` sorted and distinct, refused (ConfigError) unless each is an integer ≥ 1."""
    bad = [k for k in topks if isinstance(k, bool) or not isinstance(k, (int, np.integer))
           or k < 1]
    if bad or not topks:
        raise ConfigError(f"top-K grid: expected integers ≥ 1, found {list(topks)!r}")
    return sorted({int(k) for k in topks})


def chooser_mode(scoring: str) -> str:
    """The mode whose w ``vireid eval --scoring SCORING --choose-fusion-weight`` chooses:
    SCORING itself when it is a registered mode with a fusion weight, else
    :data:`DEFAULT_MODE` (``all``, and modes whose results do not read w)."""
    if scoring in SCORING_MODES and get_scoring(scoring).uses_fusion_weight:
        return scoring
    return DEFAULT_MODE


def select_weight(rows: Sequence[dict[str, float]]) -> int:
    """Index of the chosen row of ``rows`` ({"w", "rank1", "mAP"}, in grid order): the
    highest (rank1 + mAP) / 2, equal scores by the first row (``vireid sweep``'s rule)."""
    if not rows:
        raise ConfigError("fusion weight: expected at least one evaluated weight")
    return max(range(len(rows)), key=lambda i: ((rows[i]["rank1"] + rows[i]["mAP"]) / 2, -i))


def choose_fusion_weight(checkpoint: PathLike, data_root: PathLike,
                         weights: Sequence[float] = DEFAULT_GRID, *,
                         scoring: str = DEFAULT_MODE, topks: Optional[Sequence[int]] = None,
                         device: Union[str, torch.device] = "cpu",
                         batch_size: int | None = None, chunk_size: int | None = None,
                         use_cache: bool = True) -> dict[str, Any]:
    """Evaluate a fusion mode at each grid point on the run's held-out validation ids.

    Args:
        scoring: a registered mode with ``uses_fusion_weight`` (``fused``, ``fused-rerank``).
        weights: the w of the grid (each in [0, 1]).
        topks: the depths K of the grid, for a mode with ``uses_topk`` (default
            :data:`DEFAULT_TOPKS`); refused for a mode without one.

    Returns ``{"checkpoint", "scoring", "val_ids" (count), "val_queries", "val_gallery",
    "criterion", "grid": [{"w", "topk" (top-K modes only), "rank1", "mAP", "score"}]
    (percent, w ascending then K ascending), "chosen" (w), "chosen_topk" (K, or None),
    "seconds"}``.

    Raises:
        ConfigError: a mode without a fusion weight, depths for a mode without one, the run
            holds no validation ids (``data.val_ids=0``), a weight outside [0, 1] or a K < 1.
        CheckpointError: the mode needs the CCN and the model has none, or the ids carved
            from the data now are not the ones the checkpoint lists.
    """
    mode = get_scoring(scoring)
    if not mode.uses_fusion_weight:
        modes = [m for m in SCORING_MODES.names() if SCORING_MODES[m].uses_fusion_weight]
        raise ConfigError(f"choosing a fusion weight: expected a scoring mode with a fusion "
                          f"weight ({', '.join(modes)}), found {scoring!r}")
    if mode.uses_topk:
        depths: list[Optional[int]] = list(check_topks(DEFAULT_TOPKS if topks is None
                                                       else topks))
    elif topks is not None:
        raise ConfigError(f"choosing a top-K: the {scoring} mode has no top-K depth; expected "
                          f"a mode with one ({', '.join(_topk_modes())})")
    else:
        depths = [None]
    grid = sorted({check_fusion_weight(w) for w in weights})
    if not grid:
        raise ConfigError("fusion weight: expected at least one weight in the grid")
    t0 = time.perf_counter()
    device = resolve_device(str(device))
    model, cfg, meta = load_model_from_checkpoint(checkpoint, device)
    if mode.needs_ccn and getattr(model, "ccn", None) is None:
        raise CheckpointError(f"{meta['path']}: the {scoring} mode needs the model's CCN, "
                              f"which this model ({cfg.loss.kind}) does not have")
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
    # memo: the cosine and D_RI matrices are computed here once and every grid point reads
    # them (a top-K mode's pairs are read from the kept D_RI matrix)
    ctx = ScoringContext(ccn=getattr(model, "ccn", None), memo=True, device=device,
                         chunk_size=int(chunk_size or cfg.eval.chunk_size))
    with torch.no_grad():
        ctx.cosine(q, g)
        if mode.needs_ccn:
            ctx.d_ri(q, g)
    rows = []
    for w in grid:
        for k in depths:
            ctx.fusion_weight = w
            if k is not None:
                ctx.topk = k
            dist = mode.distance(q, g, ctx)
            cmc, m_ap, _ = eval_regdb(dist.numpy(), fq.pids, fg.pids)
            r1, mp = float(cmc[0]) * 100, float(m_ap) * 100
            rows.append({"w": w, **({} if k is None else {"topk": k}),
                         "rank1": r1, "mAP": mp, "score": (r1 + mp) / 2})
    best = rows[select_weight(rows)]
    log.info("fusion weight: w=%g%s chosen for %s on %d validation ids (val rank-1 %.1f, "
             "mAP %.1f)", best["w"], f", K={best['topk']}" if "topk" in best else "", scoring,
             len(plan.val), best["rank1"], best["mAP"])
    return {"checkpoint": str(meta["path"]), "scoring": scoring, "val_ids": len(plan.val),
            "val_queries": len(query), "val_gallery": len(gallery),
            "criterion": "(val rank-1 + val mAP) / 2, ties by the first grid point",
            "grid": rows, "chosen": best["w"], "chosen_topk": best.get("topk"),
            "seconds": round(time.perf_counter() - t0, 2)}


def _topk_modes() -> list[str]:
    return [m for m in SCORING_MODES.names()
            if SCORING_MODES[m].uses_topk and SCORING_MODES[m].uses_fusion_weight]


def format_choice(choice: dict[str, Any]) -> str:
    """The grid of :func:`choose_fusion_weight` as a markdown table (the chosen row bold; a K
    column for a top-K mode)."""
    with_k = any("topk" in r for r in choice["grid"])
    mode = f" of {choice['scoring']}" if "scoring" in choice else ""
    lines = [f"**fusion weight{' and top-K' if with_k else ''}{mode} on {choice['val_ids']} "
             f"validation ids ({choice['val_queries']} IR queries, {choice['val_gallery']} RGB "
             f"gallery images), percent**", "",
             "| w |" + (" K |" if with_k else "") + " val R1 | val mAP | score |",
             "|---|" + ("---|" if with_k else "") + "---|---|---|"]
    for r in choice["grid"]:
        chosen = r["w"] == choice["chosen"] and r.get("topk") == choice.get("chosen_topk")
        b = "**" if chosen else ""
        k = f" {b}{r['topk']}{b} |" if with_k else ""
        lines.append(f"| {b}{r['w']:g}{b} |{k} {r['rank1']:.1f} | {r['mAP']:.1f} | "
                     f"{r['score']:.2f} |")
    return "\n".join(lines)
