"""Scoring plug-ins over stored features: simplified, full, rerank (docs/architecture.md).

Every scorer returns a DISTANCE matrix (Q, G), lower = closer, ready for ``eval_sysu`` /
``eval_regdb``:

* ``simplified``: −S with S the cosine similarity of the global features G (paper "-S").
* ``full``: D_RI of every pair (paper "-F"), exact, computed by :mod:`vireid.scoring.fastccn`.
* ``rerank`` (ours, not in the paper): D_RI on each query's simplified top-K and 3 − S (≥ 2,
  since S ≤ 1) behind them, so the top-K come first, ordered by D_RI ∈ (0, 1), and the rest
  keep the simplified order.

Trials that reuse gallery images (SYSU's ten gallery draws) need not re-score pairs: score
the queries once against the union of all trials' gallery images, then index the columns of
each trial with :func:`columns_for`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor

from vireid.data.records import IR, MODALITIES, RGB
from vireid.errors import CheckpointError, ConfigError
from vireid.scoring import fastccn
from vireid.utils.registry import Registry

log = logging.getLogger(__name__)

#: D_fn(qi, gi) -> D: (M,) full-mode distance of the pairs (query qi[m], gallery gi[m]).
PairFn = Callable[[Tensor, Tensor], Tensor]


def score_simplified(qG: Tensor, gG: Tensor, chunk_size: int = 4096) -> Tensor:
    """Cosine similarity S (Q, G) float32 of qG (Q, C) and gG (G, C); higher = closer.

    Rows of zero norm give S = 0 with every row. Computed ``chunk_size`` queries at a time.
    """
    if qG.dim() != 2 or gG.dim() != 2 or qG.shape[1] != gG.shape[1]:
        raise ConfigError(f"score_simplified: expected (Q, C) and (G, C) global features, got "
                          f"{tuple(qG.shape)} and {tuple(gG.shape)}")
    g = nnf.normalize(gG.float(), dim=1)
    out = torch.empty(qG.shape[0], gG.shape[0], dtype=torch.float32, device=qG.device)
    for s in range(0, qG.shape[0], max(1, chunk_size)):
        out[s:s + chunk_size] = nnf.normalize(qG[s:s + chunk_size].float(), dim=1) @ g.T
    return out


def score_full(ccn: Any, qF: Tensor, gF: Tensor, query_side: str = "b", chunk_size: int = 256,
               backend: str = "auto") -> Tensor:
    """Full-mode distance D (Q, G) = D_RI, lower = closer; qF (Q, C, h, w), gF (G, C, h, w).

    Exact folded computation (:func:`vireid.scoring.fastccn.score_full`); ``chunk_size``
    queries at a time bounds the memory.
    """
    return fastccn.score_full(ccn, qF, gF, query_side=query_side, chunk_size=chunk_size,
                              backend=backend)  # type: ignore[return-value]


def full_pair_fn(ccn: Any, qF: Tensor, gF: Tensor, query_side: str = "b",
                 backend: str = "auto") -> PairFn:
    """The D_fn of :func:`score_rerank` for these features: (qi, gi) (M,) -> D (M,)."""

    def fn(qi: Tensor, gi: Tensor) -> Tensor:
        return fastccn.score_pairs(ccn, qF, gF, qi, gi, query_side=query_side, backend=backend)

    return fn


def score_rerank(S: Tensor, D_fn: PairFn, topk: int) -> Tensor:
    """Rerank distance (Q, G): full mode on each query's simplified top-K only.

    S: (Q, G) cosine similarities; ``D_fn(qi, gi)`` returns D_RI of the listed pairs (all
    Q·K pairs are passed in one call). Entries in a query's top-K get D_RI ∈ (0, 1); the
    others get 3 − S ≥ 2, so they stay behind, in simplified order. K ≥ G is full mode.
    """
    if topk < 1:
        raise ConfigError(f"rerank topk: expected an integer >= 1, got {topk!r}")
    nq, ng = S.shape
    k = min(int(topk), ng)
    dist = (3.0 - S.float()).clone()
    if nq == 0 or k == 0:
        return dist
    top = torch.topk(S.float(), k, dim=1).indices                  # (Q, K)
    qi = torch.arange(nq, device=S.device).repeat_interleave(k)
    gi = top.reshape(-1)
    d = torch.as_tensor(D_fn(qi, gi)).to(dist.device, torch.float32).reshape(nq, k)
    dist.scatter_(1, top, d)
    return dist


def columns_for(split_paths: Sequence[str], union_paths: Sequence[str]) -> Tensor:
    """Column of each of a trial's gallery images in a matrix scored against ``union_paths``.

    Returns a (len(split_paths),) int64 tensor; ``dist_union[:, cols]`` is the trial's matrix.

    Raises:
        CheckpointError: a path of the split is not in the union.
    """
    where = {p: i for i, p in enumerate(union_paths)}
    cols = []
    for p in split_paths:
        if p not in where:
            raise CheckpointError(f"gallery image {p!r} is not among the {len(union_paths)} "
                                  f"scored gallery images (was the union built from these trials?)")
        cols.append(where[p])
    return torch.tensor(cols, dtype=torch.int64)


def union_paths(*splits: Sequence[str]) -> list[str]:
    """Distinct paths of several trials' galleries, in first-seen order."""
    return list(dict.fromkeys(p for split in splits for p in split))


# --------------------------------------------------------------------------------------
# The one registry of scoring modes, used by evaluation (engine.evaluate), search
# (apps.search) and the CLI alike.


def query_side(query_modality: str, gallery_modality: str) -> str:
    """The CCN side ("a" or "b") a query takes against a gallery image: the RGB image of a
    cross-modality pair is side "a", so an IR query against an RGB image is "b"; a
    same-modality pair (open set) puts its first image, the query, on side "a".
    (Swapping sides changes D_RI only through an unshared W_D, ``ccn.share_fc=false``.)"""
    for m in (query_modality, gallery_modality):
        if m not in MODALITIES:
            raise ConfigError(f"modality: expected one of {', '.join(MODALITIES)}, found {m!r}")
    return "b" if (query_modality, gallery_modality) == (IR, RGB) else "a"


def _simplified(q: Any, g: Any, **_: Any) -> Tensor:
    return -score_simplified(q.G, g.G)


def _full(q: Any, g: Any, *, ccn: Any = None, query_side: str = "b", chunk_size: int = 256,
          backend: str = "auto", **_: Any) -> Tensor:
    return score_full(ccn, q.F, g.F, query_side=query_side, chunk_size=chunk_size, backend=backend)


def _rerank(q: Any, g: Any, *, ccn: Any = None, topk: int = 20, query_side: str = "b",
            backend: str = "auto", **_: Any) -> Tensor:
    return score_rerank(score_simplified(q.G, g.G), full_pair_fn(ccn, q.F, g.F, query_side, backend),
                        topk)


@dataclass(frozen=True)
class ScoringMode:
    """One scoring mode: how it scores a query set against a gallery and how to read it.

    ``score(q, g, *, ccn=None, query_side="b", chunk_size=256, topk=20, backend="auto")``
    takes feature sets (anything with ``.F`` (N, C, h, w) and ``.G`` (N, C)) and returns a
    distance (Q, G), lower = closer. ``native`` says what the mode's own score is (what
    search reports): a similarity (higher = closer) or a distance.
    """

    name: str
    score_fn: Callable[..., Tensor]
    needs_ccn: bool
    higher_is_better: bool
    native: str
    paper: str

    def score(self, q: Any, g: Any, **kw: Any) -> Tensor:
        if self.needs_ccn and kw.get("ccn") is None:
            raise ConfigError(f"{self.name} scoring needs the model's CCN (its W_D)")
        return self.score_fn(q, g, **kw)


#: ``eval.scoring`` -> :class:`ScoringMode`.
SCORING_MODES: Registry[ScoringMode] = Registry("scoring mode", "eval.scoring")
for _mode in (
    ScoringMode("simplified", _simplified, False, True,
                              "cosine similarity of global features (higher = more similar)", "-S"),
    ScoringMode("full", _full, True, False,
                        "CCN difference score D_RI in [0, 1] (lower = more similar)", "-F"),
    ScoringMode("rerank", _rerank, True, False,
                          "CCN difference score D_RI on the simplified top-K (lower = more similar)", "not in the paper"),
):
    SCORING_MODES.register(_mode.name, _mode)


def get_scoring(name: str) -> ScoringMode:
    """The scoring mode ``name``; ConfigError naming the modes otherwise."""
    return SCORING_MODES.get(name)
