"""The fusion scoring modes (ours, not in the paper): the embedding's cosine distance and the
CCN's pairwise score, mixed with one weight (issue 24, 1a).

    D_fused = (1 − w) · (1 − S) / 2 + w · D_RI,      w = ``eval.fusion_weight`` ∈ [0, 1]

S is the cosine similarity of the global features G (simplified mode) and D_RI the CCN's
difference score of the pair (full mode). Why this form: both terms are distances on the
same scale, (1 − S)/2 ∈ [0, 1] and D_RI ∈ (0, 1) (a sigmoid), so one weight is a convex mix
of the two with no normalisation fitted to the data; the ends are the existing modes, so a
weight chosen on validation ids can only be compared against both.

* ``fused``: D_fused of every pair of the gallery (w = 0 ranks exactly as simplified, w = 1
  is exactly full mode).
* ``fused-rerank``: D_fused on each query's simplified top-K only (K = ``eval.topk``, the
  top-K and tie-break of ``rerank``: :mod:`vireid.scoring.topk`), 3 − S (≥ 2) for every
  other gallery item, so those stay behind in simplified order; D_fused ∈ [0, 1] orders the
  top-K. Its ends are existing modes too: K ≥ the gallery size is ``fused``, w = 1 is
  ``rerank`` and w = 0 ranks as simplified. It costs Q·K CCN pairs instead of Q·G.

A rank-level fusion is not implemented (issue 24 lists it as another candidate).

Choosing w (and K for ``fused-rerank``) on a run's held-out validation ids (never the test
ids): :func:`vireid.apps.fusion_weight.choose_fusion_weight` (``vireid eval
--choose-fusion-weight [--choose-topk]``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vireid.errors import ConfigError
from vireid.scoring.inputs import Features
from vireid.scoring.scorers import PairFn, ScoringContext, register_scoring, rerank_topk


def check_fusion_weight(w: float) -> float:
    """``w`` as a float, refused (ConfigError) unless it is a number in [0, 1]."""
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= float(w) <= 1.0:
        raise ConfigError(f"fusion_weight: expected a number in [0, 1], found {w!r}")
    return float(w)


def fuse(S: Tensor, D: Tensor, w: float) -> Tensor:
    """The fused distance (Q, G) = (1 − w)·(1 − S)/2 + w·D of S (Q, G) cosine similarities
    and D (Q, G) D_RI; lower = closer. w = 0 gives (1 − S)/2 (the simplified ranking) and
    w = 1 gives D exactly (0·x and 1·x are exact in floating point)."""
    w = check_fusion_weight(w)
    return (1.0 - w) * ((1.0 - S.float()) * 0.5) + w * D.float()


def _fused_distance(q: Features, g: Features, ctx: ScoringContext) -> Tensor:
    w = check_fusion_weight(ctx.fusion_weight)
    # at an end the other matrix is not needed: no CCN pass at w = 0, no cosine at w = 1
    if w == 0.0:
        return (1.0 - ctx.cosine(q, g)) * 0.5
    if w == 1.0:
        return ctx.d_ri(q, g).clone()
    return fuse(ctx.cosine(q, g), ctx.d_ri(q, g), w)


register_scoring("fused", needs_ccn=True, uses_fusion_weight=True, label="S+F",
                 paper="not in the paper (issue 24)",
                 native="(1 − w)·(1 − S)/2 + w·D_RI, w = eval.fusion_weight "
                        "(lower = more similar)")(_fused_distance)


def _fused_pairs(S: Tensor, d_fn: PairFn, w: float) -> PairFn:
    """The pair function of :meth:`ScoringContext.rerank` whose pairs get the fused value:
    (qi (M,), gi (M,)) -> (M,) from S (Q, G) and the D_RI pair function ``d_fn``."""
    def fn(qi: Tensor, gi: Tensor) -> Tensor:
        s = S[qi.to(S.device), gi.to(S.device)]
        return fuse(s, torch.as_tensor(d_fn(qi, gi)).to(s.device), w)
    return fn


def _fused_rerank_distance(q: Features, g: Features, ctx: ScoringContext) -> Tensor:
    w = check_fusion_weight(ctx.fusion_weight)
    S = ctx.cosine(q, g)
    return ctx.rerank(S, _fused_pairs(S, ctx.d_ri_pairs(q, g), w))


def _fused_rerank_topk(q: Features, gallery: Any, k: int, ctx: ScoringContext
                       ) -> tuple[Tensor, Tensor]:
    """The best k of the fused-rerank distance without scoring the whole gallery (the
    candidates of ``rerank``'s top-k, each given the fused value)."""
    w = check_fusion_weight(ctx.fusion_weight)
    return rerank_topk(q, gallery, k, ctx, combine=lambda S, D: fuse(S, D, w))


register_scoring("fused-rerank", needs_ccn=True, uses_topk=True, uses_fusion_weight=True,
                 label="S+F@K", paper="not in the paper (issue 24)",
                 native="(1 − w)·(1 − S)/2 + w·D_RI on the simplified top-K, w = "
                        "eval.fusion_weight (lower = more similar)",
                 topk_fn=_fused_rerank_topk)(_fused_rerank_distance)
