"""Full-mode (and rerank) scoring split across the ranks of a torchrun job.

Full mode costs one CCN evaluation per query × gallery pair, so it is the part of an
evaluation worth spreading over processes. The split is by **query rows**: rank r scores a
contiguous block of queries against the whole gallery, and the blocks are gathered in rank
order. Block boundaries fall on multiples of ``chunk_size`` (the single-process scorer's own
query chunks), so every rank runs exactly the chunks one process would run and the merged
matrix equals the single-process matrix bit for bit — and hence so do the rankings and
metrics computed from it.

Every rank must hold the same ``qF``/``gF`` (e.g. every rank extracted all features, or rank
0 broadcast them). With no process group (a plain run, or ``WORLD_SIZE=1``) every function
here is the single-process computation.

:func:`sharded_context` is a :class:`~vireid.scoring.scorers.ScoringContext` whose full-mode
matrix and rerank distance are split this way, so that every scoring mode built on them
(evaluation under torchrun) is.

:func:`topk_sharded` splits the **gallery** instead, for searches over galleries too large for
one process: each rank keeps the best k of its gallery block (the mode's own top-k) and the
ranked lists are merged by :func:`vireid.scoring.topk.merge_topk` (equal distances by lower
gallery row, so the merge is exact as well). :func:`full_topk_sharded` is that for full mode.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vireid.scoring.inputs import Features, as_features
from vireid.scoring.scorers import (ScoringContext, ScoringMode, get_scoring, score_full,
                                    score_rerank)
from vireid.scoring.topk import merge_topk
from vireid.utils import distributed as D

log = logging.getLogger(__name__)


def gather_rows(compute: Callable[[int, int], Tensor], n_rows: int, n_cols: int, align: int = 1,
                dst: Optional[int] = None, dtype: torch.dtype = torch.float32) -> Optional[Tensor]:
    """Compute a (n_rows, n_cols) matrix block-wise across ranks and gather it.

    Rank r calls ``compute(lo, hi)`` for its slice ``[lo, hi)`` of the rows
    (:func:`vireid.utils.distributed.shard_bounds` with ``align``), which must return a
    (hi − lo, n_cols) tensor; ``compute`` is not called for an empty slice.

    Returns:
        The full (n_rows, n_cols) CPU tensor on every rank (``dst`` None) or on rank ``dst``
        only (the others get None).
    """
    world, me = D.world_size(), D.rank()
    if world == 1:
        return compute(0, n_rows).to("cpu", dtype) if n_rows else torch.empty(0, n_cols, dtype=dtype)
    bounds = [D.shard_bounds(n_rows, world, r, align) for r in range(world)]
    lo, hi = bounds[me]
    dev = D.collective_device()
    block = compute(lo, hi) if hi > lo else torch.empty(0, n_cols)
    if tuple(block.shape) != (hi - lo, n_cols):
        raise RuntimeError(f"rank {me}: block of shape {tuple(block.shape)}, expected {(hi - lo, n_cols)}")
    # Collectives need equal shapes: pad every block to the largest one.
    rows_max = max(h - l for l, h in bounds)
    padded = torch.zeros(rows_max, n_cols, dtype=dtype, device=dev)
    padded[: hi - lo] = block.to(dev, dtype)
    if dst is None:
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
    else:
        parts = [torch.empty_like(padded) for _ in range(world)] if me == dst else None
        dist.gather(padded, parts, dst=dst)
        if me != dst:
            return None
    assert parts is not None
    return torch.cat([p[: h - l] for p, (l, h) in zip(parts, bounds)]).cpu()


def score_sharded(ccn: nn.Module, qF: Tensor, gF: Tensor, query_side: str = "b",
                  chunk_size: int = 256, backend: str = "auto", *,
                  dst: Optional[int] = None) -> Optional[Tensor]:
    """Full-mode distance D_RI, query rows split across ranks; same result as ``score_full``.

    qF: (Q, C, h, w), gF: (G, C, h, w) (identical on every rank); returns D: (Q, G),
    lower = closer, on every rank (``dst`` None) or on rank ``dst`` only (others: None).
    Arguments as :func:`vireid.scoring.scorers.score_full`.
    """

    def compute(lo: int, hi: int) -> Tensor:
        with torch.no_grad():
            return torch.as_tensor(score_full(ccn, qF[lo:hi], gF, query_side=query_side,
                                              chunk_size=chunk_size, backend=backend))

    log.debug("full-mode scoring of %d x %d pairs on %d ranks", len(qF), len(gF), D.world_size())
    return gather_rows(compute, len(qF), len(gF), align=chunk_size, dst=dst)


def rerank_sharded(S: Tensor, d_fn: Callable[[Tensor, Tensor], Tensor], topk: int,
                   chunk_size: int = 256, *, dst: Optional[int] = None) -> Optional[Tensor]:
    """Rerank distances with the query rows split across ranks; same result as ``score_rerank``.

    S: (Q, G) cosine similarities (identical on every rank); ``d_fn(qi (M,), gi (M,)) -> D (M,)``
    the pair function :func:`vireid.scoring.scorers.score_rerank` takes for the whole of S
    (``qi`` index S's rows; each rank asks only for pairs of its own rows). Returns dist
    (Q, G) as ``score_rerank(S, d_fn, topk)`` would.
    """
    def compute(lo: int, hi: int) -> Tensor:
        def local(qi: Tensor, gi: Tensor) -> Tensor:
            return d_fn(qi + lo, gi)  # score_rerank numbers the rows of its slice from 0

        with torch.no_grad():
            return torch.as_tensor(score_rerank(S[lo:hi], local, topk))

    return gather_rows(compute, S.shape[0], S.shape[1], align=chunk_size, dst=dst,
                       dtype=S.dtype if S.is_floating_point() else torch.float32)


def sharded_context(**options: Any) -> ScoringContext:
    """A :class:`~vireid.scoring.scorers.ScoringContext` of ``options`` whose full-mode matrix
    (:func:`score_sharded`) and rerank distance (:func:`rerank_sharded`) split the query rows
    across the ranks; every rank gets the single-process result. Every rank must make the
    same calls in the same order (they are collectives)."""
    ctx = ScoringContext(**options)
    ctx.full_matrix = score_sharded
    ctx.rerank_rows = rerank_sharded
    return ctx


def topk_sharded(mode: ScoringMode, q: Any, g: Any, k: int, ctx: ScoringContext
                 ) -> tuple[Tensor, Tensor]:
    """The best ``k`` gallery rows of each query by ``mode``, with the gallery ``g`` (a feature
    set, identical on every rank) split across ranks.

    Each rank runs ``mode.topk`` on its block of gallery rows; the lists are gathered and
    merged. Returns on every rank (distance (Q, k') ascending, rows (Q, k') int64), k' =
    min(k, G); equal distances by lower row.
    """
    world, me = D.world_size(), D.rank()
    q, g = as_features(q), as_features(g)
    lo, hi = D.shard_bounds(len(g), world, me)
    if hi > lo:
        d, idx = mode.topk(q, g.rows(range(lo, hi)), k, ctx)
        d, idx = d.cpu(), idx + lo
    else:
        d, idx = torch.empty(len(q), 0), torch.empty(len(q), 0, dtype=torch.int64)
    if world == 1:
        return d, idx
    return merge_topk(D.all_gather_object((d, idx)), k)


def full_topk_sharded(ccn: nn.Module, qF: Tensor, gF: Tensor, k: int, query_side: str = "b",
                      chunk_size: int = 256) -> tuple[Tensor, Tensor]:
    """The k gallery items of smallest D_RI per query, with the gallery split across ranks
    (:func:`topk_sharded` of full mode).

    qF: (Q, C, h, w), gF: (G, C, h, w) (identical on every rank). Returns on every rank
    (D (Q, k') ascending, rows (Q, k') int64), k' = min(k, G); equal D are ordered by row.
    """
    return topk_sharded(get_scoring("full"), Features(F=qF), Features(F=gF), k,
                        ScoringContext(ccn=ccn, query_side=query_side, chunk_size=chunk_size))
