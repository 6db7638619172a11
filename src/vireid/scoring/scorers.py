"""Scoring modes over stored features, the one registry of them, and what they share.

Every mode turns a query set and a gallery set into a DISTANCE matrix (Q, G), lower =
closer, ready for the metrics (``eval_sysu``, ``eval_regdb``, …). The built-in modes:

* ``simplified``: −S with S the cosine similarity of the global features G (paper "-S").
* ``full``: D_RI of every pair (paper "-F"), exact, computed by :mod:`vireid.scoring.fastccn`.
* ``rerank`` (ours, not in the paper): D_RI on each query's simplified top-K and 3 − S (≥ 2,
  since S ≤ 1) behind them, so the top-K come first, ordered by D_RI ∈ (0, 1), and the rest
  keep the simplified order.
* ``fused`` (ours, :mod:`vireid.scoring.fusion`): (1 − w)(1 − S)/2 + w·D_RI, w =
  ``ctx.fusion_weight``, and ``fused-rerank``, that value on each query's simplified top-K
  and 3 − S behind (rerank with the fused value in place of D_RI); registered when the
  package :mod:`vireid.scoring` is imported.

A mode is a :class:`ScoringMode` in :data:`SCORING_MODES` (``eval.scoring``), registered with
:func:`register_scoring` (public: ``vireid.register_scoring``). The entry carries everything
evaluation, search and the CLI ask about a mode: its distance, the self-distances of
k-reciprocal re-ranking, its per-query top-k over a (sharded) gallery, whether it needs the
CCN, and what its native score means. Nothing else switches on a mode's name.

A mode's functions get feature sets as :class:`~vireid.scoring.inputs.Features` (float32
torch tensors, converted from numpy or any object with ``.F``/``.G``) and a
:class:`ScoringContext`: the options (CCN, query side, rerank depth, chunk size, device) and
the shared primitives (:meth:`~ScoringContext.cosine`, :meth:`~ScoringContext.d_ri`,
:meth:`~ScoringContext.d_ri_pairs`, :meth:`~ScoringContext.rerank`), which evaluation keeps
per pair of feature sets (``memo``) so that every mode and every trial of one extraction
reuses them.

Trials that reuse gallery images (SYSU's ten gallery draws) need not re-score pairs: score
the queries once against the union of all trials' gallery images, then take each trial's
columns (:func:`columns_for`, :meth:`Features.rows`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor

from vireid.config import EvalConfig
from vireid.data.records import IR, MODALITIES, RGB
from vireid.errors import CheckpointError, ConfigError
from vireid.scoring import fastccn
from vireid.scoring import topk as topk_mod
from vireid.scoring.inputs import ArrayLike, Features, GalleryReader, as_features
from vireid.utils.registry import Registry

log = logging.getLogger(__name__)

#: D_fn(qi, gi) -> D: (M,) full-mode distance of the pairs (query qi[m], gallery gi[m]).
PairFn = Callable[[Tensor, Tensor], Tensor]
#: combine(S, D) -> distance, elementwise on equal shapes: the distance a rerank-style mode
#: gives its listed pairs from their cosine similarity S and D_RI (``rerank``: D itself).
PairCombine = Callable[[Tensor, Tensor], Tensor]
#: The query side of a set pair whose sets mix modalities: each block is scored on its own.
MIXED = "mixed"


# --------------------------------------------------------------------------- kernels
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
    Q·K pairs are passed in one call). The top-K are chosen by :func:`vireid.scoring.topk.topk`
    (higher S first, equal S by lower column). Entries in a query's top-K get D_RI ∈ (0, 1);
    the others get 3 − S ≥ 2, so they stay behind, in simplified order. K ≥ G is full mode.
    """
    if topk < 1:
        raise ConfigError(f"rerank topk: expected an integer >= 1, got {topk!r}")
    nq, ng = S.shape
    k = min(int(topk), ng)
    dist = (3.0 - S.float()).clone()
    if nq == 0 or k == 0:
        return dist
    top = topk_mod.topk(S.float(), k, largest=True)[1]                 # (Q, K)
    qi = torch.arange(nq, device=S.device).repeat_interleave(k)
    gi = top.reshape(-1)
    d = torch.as_tensor(D_fn(qi, gi)).to(dist.device, torch.float32).reshape(nq, k)
    dist.scatter_(1, top, d)
    return dist


def _score_rerank_rows(S: Tensor, D_fn: PairFn, topk: int, *, chunk_size: int = 256) -> Tensor:
    """:func:`score_rerank` with the signature of :attr:`ScoringContext.rerank_rows`."""
    return score_rerank(S, D_fn, topk)


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


def query_side(query_modality: str, gallery_modality: str) -> str:
    """The CCN side ("a" or "b") a query takes against a gallery image: the RGB image of a
    cross-modality pair is side "a", so an IR query against an RGB image is "b"; a
    same-modality pair (open set) puts its first image, the query, on side "a".
    (Swapping sides changes D_RI only through an unshared W_D, ``ccn.share_fc=false``.)"""
    for m in (query_modality, gallery_modality):
        if m not in MODALITIES:
            raise ConfigError(f"modality: expected one of {', '.join(MODALITIES)}, found {m!r}")
    return "b" if (query_modality, gallery_modality) == (IR, RGB) else "a"


# --------------------------------------------------------------------------- context
@dataclass(eq=False)
class ScoringContext:
    """The options of one scoring job and the matrices its modes share.

    Attributes:
        ccn: the model's CCN (``model.ccn``); modes with ``needs_ccn`` refuse to run without.
        query_side: the CCN side of every query ("a"/"b"), or None: from the sets'
            modalities by :func:`query_side`, each (query modality, gallery modality) block
            on its own when a set mixes them, and "b" (IR queries, RGB gallery) when the
            sets carry no modalities.
        topk: the rerank depth K (modes with ``uses_topk``).
        fusion_weight: the weight w ∈ [0, 1] of D_RI in the ``fused`` mode (modes with
            ``uses_fusion_weight``; :mod:`vireid.scoring.fusion`, which checks its range).
        chunk_size: queries per full-mode chunk.
        backend: the CCN kernel (:func:`vireid.scoring.fastccn.resolve_backend`).
        search_backend: the cosine top-k of search, "auto", "faiss" or "torch"
            (:func:`vireid.scoring.topk.resolve_backend`); ``backend_used`` says which ran.
        device: where feature maps go for CCN scoring; results come back on the CPU.
        memo: keep the primitive matrices (cosine, D_RI) per pair of whole sets and index
            them for sets made by :meth:`Features.rows` (evaluation: every mode and trial
            of one extraction reads them); off, each call computes on the sets it is given.
        full_matrix: ``(ccn, qF, gF, *, query_side, chunk_size, backend) -> D`` (default
            :func:`score_full`); ``rerank_rows``: ``(S, D_fn, topk, *, chunk_size) ->
            dist`` (default :func:`score_rerank`). :func:`vireid.scoring.sharded.sharded_context`
            replaces both by their query-row split across ranks.
    """

    ccn: Any = None
    query_side: Optional[str] = None
    topk: int = 20
    fusion_weight: float = EvalConfig.fusion_weight
    chunk_size: int = 256
    backend: str = "auto"
    search_backend: str = "auto"
    device: Union[str, torch.device] = "cpu"
    memo: bool = False
    full_matrix: Callable[..., Any] = score_full
    rerank_rows: Callable[..., Any] = _score_rerank_rows
    backend_used: Optional[str] = field(default=None, init=False)
    _cache: dict[tuple[Any, ...], tuple[Tensor, float, Any, Any]] = field(
        default_factory=dict, init=False, repr=False)
    _inputs: dict[int, tuple[Any, Features]] = field(default_factory=dict, init=False, repr=False)
    _hits: set[tuple[Any, ...]] = field(default_factory=set, init=False, repr=False)
    _made: set[tuple[Any, ...]] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.query_side not in (None, "a", "b"):
            raise ConfigError(f"query_side: expected 'a', 'b' or None, found {self.query_side!r}")
        for name in ("topk", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name}: expected an integer >= 1, found {value!r}")
            setattr(self, name, int(value))

    # ------------------------------------------------------------------ inputs
    def features(self, x: Any) -> Features:
        """``as_features(x)``; with ``memo`` the same object always maps to the same set."""
        if isinstance(x, Features) or not self.memo:
            return as_features(x)
        if id(x) not in self._inputs:
            self._inputs[id(x)] = (x, as_features(x))  # x kept: its id stays unique
        return self._inputs[id(x)][1]

    def side(self, q: Features, g: Features) -> str:
        """The CCN side of the queries of ``q`` against ``g``, or :data:`MIXED`."""
        if self.query_side is not None:
            return self.query_side
        if q.modalities is None or g.modalities is None:
            return "b"
        mq, mg = set(q.modalities), set(g.modalities)
        return query_side(mq.pop(), mg.pop()) if len(mq) == 1 and len(mg) == 1 else MIXED

    def need_ccn(self, what: str) -> Any:
        if self.ccn is None:
            raise ConfigError(f"{what} needs the model's CCN (its W_D); pass ccn=model.ccn")
        return self.ccn

    # ------------------------------------------------------------------ memo
    def cached(self, name: str, q: Features, g: Features,
               compute: Callable[[Features, Features], Tensor]) -> Tensor:
        """``compute(q, g)``; with ``memo``, computed once on the whole sets ``q`` and ``g``
        were taken from and indexed by their rows (so every subset reads the same numbers)."""
        if not self.memo:
            return compute(q, g)
        (rq, iq), (rg, ig) = q.origin(), g.origin()
        key = (name, id(rq), id(rg))
        if key in self._cache:
            self._hits.add(key)
        else:
            t0 = time.perf_counter()
            value = compute(rq, rg)
            self._cache[key] = (value, time.perf_counter() - t0, rq, rg)
            self._made.add(key)
        out = self._cache[key][0]
        if iq is not None:
            out = out[iq]
        if ig is not None:
            out = out[:, ig]
        return out

    def has(self, name: str, q: Features, g: Features) -> bool:
        """Whether ``cached(name, q, g, …)`` would read a kept matrix."""
        return self.memo and (name, id(q.origin()[0]), id(g.origin()[0])) in self._cache

    def begin_account(self) -> None:
        """Start counting the kept matrices read (not computed) from now on."""
        self._hits, self._made = set(), set()

    def reused_seconds(self) -> float:
        """Seconds it took to compute the kept matrices read since :meth:`begin_account`
        that were computed before it (so a mode's time includes what it shares)."""
        return sum(self._cache[k][1] for k in self._hits - self._made)

    # ------------------------------------------------------------------ primitives
    def cosine(self, q: Features, g: Features) -> Tensor:
        """S (Q, G) float32 cosine similarity of the global features (CPU)."""
        def compute(a: Features, b: Features) -> Tensor:
            if a.G is None or b.G is None:
                raise ConfigError("cosine similarity needs the global features G of both sets")
            return torch.as_tensor(score_simplified(a.G, b.G)).cpu()
        return self.cached("cosine", q, g, compute)

    def _full(self, qF: Tensor, gF: Tensor, side: str) -> Tensor:
        with torch.no_grad():
            return torch.as_tensor(self.full_matrix(
                self.ccn, qF.to(self.device), gF.to(self.device), query_side=side,
                chunk_size=self.chunk_size, backend=self.backend)).cpu()

    def d_ri(self, q: Features, g: Features) -> Tensor:
        """D (Q, G) = D_RI of every pair (CPU); with mixed modalities one call per (query
        modality, gallery modality) block, each with its own query side."""
        self.need_ccn("full-mode scoring")

        def compute(a: Features, b: Features) -> Tensor:
            if a.F is None or b.F is None:
                raise ConfigError("D_RI needs the feature maps F of both sets")
            side = self.side(a, b)
            if side != MIXED:
                return self._full(a.F, b.F, side)
            D = torch.empty(len(a), len(b))
            qm, gm = np.asarray(a.modalities), np.asarray(b.modalities)
            for mq in (RGB, IR):
                qi = torch.from_numpy(np.flatnonzero(qm == mq))
                for mg in (RGB, IR):
                    gi = torch.from_numpy(np.flatnonzero(gm == mg))
                    if len(qi) and len(gi):
                        D[qi[:, None], gi[None, :]] = self._full(a.F[qi], b.F[gi],
                                                                 query_side(mq, mg))
            return D
        return self.cached("d_ri", q, g, compute)

    def d_ri_pairs(self, q: Features, g: Features) -> PairFn:
        """D_RI of listed pairs ``(qi (M,), gi (M,)) -> (M,)``: read from :meth:`d_ri`'s
        matrix when it is kept (or the sets mix modalities, where it is computed), else
        computed for those pairs only."""
        ccn = self.need_ccn("rerank scoring")
        side = self.side(q, g)
        if side == MIXED or self.has("d_ri", q, g):
            D = self.d_ri(q, g)
            return lambda qi, gi: D[qi.cpu(), gi.cpu()]
        if q.F is None or g.F is None:
            raise ConfigError("D_RI needs the feature maps F of both sets")
        return full_pair_fn(ccn, q.F.to(self.device), g.F.to(self.device), side, self.backend)

    def rerank(self, S: Tensor, d_fn: PairFn) -> Tensor:
        """The rerank distance (:func:`score_rerank`) of S at depth :attr:`topk`."""
        with torch.no_grad():
            return torch.as_tensor(self.rerank_rows(S, d_fn, self.topk,
                                                    chunk_size=self.chunk_size))


# --------------------------------------------------------------------------- modes
#: distance(q, g, ctx) -> (Q, G) tensor, lower = closer.
DistanceFn = Callable[[Features, Features, ScoringContext], Tensor]
#: self_distance(a, ctx) -> (N, N) tensor: the set against itself (k-reciprocal).
SelfDistanceFn = Callable[[Features, ScoringContext], Tensor]
#: topk(q, gallery, k, ctx) -> (distance (Q, k') ascending, gallery rows (Q, k') int64).
TopKFn = Callable[[Features, Any, int, ScoringContext], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class ScoringMode:
    """One scoring mode: everything evaluation, search and the CLI ask about it.

    Attributes:
        name: the ``eval.scoring`` / ``--scoring`` name.
        distance_fn: ``(q, g, ctx) -> (Q, G)`` distance, lower = closer (:data:`DistanceFn`).
        needs_ccn: it reads the model's CCN (``ctx.ccn``); evaluation skips it under
            ``all`` for a model without one and warns when the loss did not train it.
        uses_maps: it reads the feature maps F (search refuses queries without them).
        uses_topk: its distance depends on ``ctx.topk`` (the rerank depth K): results
            record K, search reports it.
        uses_fusion_weight: its distance depends on ``ctx.fusion_weight``: results record w.
        higher_is_better: the native score is a similarity, ``−distance``; else the native
            score is the distance itself.
        native: what the native score means (search output).
        paper: its name in the paper's tables ("-S", "-F"), or a note.
        kreciprocal_offset: added to the distances given to k-reciprocal re-ranking, which
            needs them non-negative (simplified: 1, so −S becomes 1 − S).
        self_distance_fn: ``(a, ctx) -> (N, N)``, the set against itself for k-reciprocal
            re-ranking; None = ``distance_fn(a, a, ctx)``.
        topk_fn: ``(q, gallery, k, ctx) -> (distance, rows)``, the best k of each query over
            a gallery (an index or a feature set); None = the distance of each gallery shard
            merged by :class:`vireid.scoring.topk.RunningTopK`. An override must return what
            the default would (the best k by distance, ties by lower row), only faster.
        label: short name in tables and curve legends ("S", "F"); "" = the name. Evaluation
            results carry it (``"label"``), so drawing code never maps mode names itself.
    """

    name: str
    distance_fn: DistanceFn
    needs_ccn: bool = False
    uses_maps: bool = True
    uses_topk: bool = False
    uses_fusion_weight: bool = False
    higher_is_better: bool = False
    native: str = "distance (lower = more similar)"
    paper: str = ""
    kreciprocal_offset: float = 0.0
    self_distance_fn: Optional[SelfDistanceFn] = None
    topk_fn: Optional[TopKFn] = None
    label: str = ""

    def context(self, ctx: Optional[ScoringContext] = None, **options: Any) -> ScoringContext:
        """``ctx``, or a new :class:`ScoringContext` of ``options``; refuses a mode that
        needs the CCN without one."""
        if ctx is not None and options:
            raise ConfigError(f"scoring {self.name}: pass options in the context or as keywords, "
                              f"not both (got {', '.join(sorted(options))})")
        ctx = ctx if ctx is not None else ScoringContext(**options)
        if self.needs_ccn and ctx.ccn is None:
            raise ConfigError(f"{self.name} scoring needs the model's CCN (its W_D); pass "
                              f"ccn=model.ccn")
        return ctx

    def _checked(self, d: Any, nq: int, ng: int, what: str) -> Tensor:
        d = torch.as_tensor(d)
        if tuple(d.shape) != (nq, ng):
            raise ConfigError(f"scoring {self.name}: its {what} returned shape "
                              f"{tuple(d.shape)}, expected {(nq, ng)}")
        return d.cpu()

    def distance(self, q: Any, g: Any, ctx: Optional[ScoringContext] = None,
                 **options: Any) -> Tensor:
        """Distance (Q, G) of the queries ``q`` against the gallery ``g`` on the CPU, lower =
        closer. ``q``, ``g``: feature sets (:func:`as_features`: ``.F`` (N, C, h, w), ``.G``
        (N, C), numpy or torch). ``options``: those of :class:`ScoringContext` when no
        ``ctx`` is given (``ccn=model.ccn``, ``topk=20``, …)."""
        ctx = self.context(ctx, **options)
        q, g = ctx.features(q), ctx.features(g)
        with torch.no_grad():
            return self._checked(self.distance_fn(q, g, ctx), len(q), len(g), "distance")

    def kreciprocal_input(self, dist: ArrayLike) -> np.ndarray:
        """A distance of this mode as k-reciprocal re-ranking's input (non-negative)."""
        d = dist.numpy() if isinstance(dist, Tensor) else np.asarray(dist)
        return d + self.kreciprocal_offset if self.kreciprocal_offset else d

    def self_distance(self, a: Any, ctx: Optional[ScoringContext] = None,
                      **options: Any) -> np.ndarray:
        """(N, N) k-reciprocal input of a set against itself: :meth:`kreciprocal_input` of
        ``self_distance_fn`` (default: the distance of ``a`` against ``a``), diagonal 0 as a
        metric distance has it (D_RI of an image with itself is not 0)."""
        ctx = self.context(ctx, **options)
        a = ctx.features(a)
        with torch.no_grad():
            d = (self.self_distance_fn(a, ctx) if self.self_distance_fn is not None
                 else self.distance_fn(a, a, ctx))
        out = self.kreciprocal_input(self._checked(d, len(a), len(a), "self-distance")).copy()
        np.fill_diagonal(out, 0.0)
        return out

    def topk(self, q: Any, gallery: Any, k: int, ctx: Optional[ScoringContext] = None,
             **options: Any) -> tuple[Tensor, Tensor]:
        """The best ``k`` gallery rows of each query: (distance (Q, k') ascending, rows (Q,
        k') int64), k' = min(k, gallery size), equal distances by lower row
        (:mod:`vireid.scoring.topk`). ``gallery``: an index-like object (``iter_shards()``,
        ``G()``, ``take_F(rows)``, ``count``, ``modality``) or a feature set."""
        if k < 1:
            raise ConfigError(f"topk: expected an integer ≥ 1, found {k}")
        ctx = self.context(ctx, **options)
        q = ctx.features(q)
        with torch.no_grad():
            if self.topk_fn is not None:
                d, rows = self.topk_fn(q, gallery, k, ctx)
            else:
                best = topk_mod.RunningTopK(k)
                for start, block in GalleryReader(gallery).shards():
                    best.add(self.distance(q, block, ctx), start)
                d, rows = best.result()
        return d, rows.to(torch.int64)

    def native_score(self, dist: Tensor) -> Tensor:
        """The mode's native score of a distance (−distance for a similarity)."""
        return -dist if self.higher_is_better else dist


#: ``eval.scoring`` -> :class:`ScoringMode`.
SCORING_MODES: Registry[ScoringMode] = Registry("scoring mode", "eval.scoring")


def register_scoring(name: str, *, needs_ccn: bool = False, uses_maps: bool = True,
                     uses_topk: bool = False, uses_fusion_weight: bool = False,
                     higher_is_better: bool = False,
                     native: str = "distance (lower = more similar)", paper: str = "",
                     kreciprocal_offset: float = 0.0,
                     self_distance_fn: Optional[SelfDistanceFn] = None,
                     topk_fn: Optional[TopKFn] = None, label: str = "",
                     replace: bool = False) -> Callable[[DistanceFn], DistanceFn]:
    """Decorator registering ``fn(q, g, ctx) -> (Q, G) distance`` as the scoring mode
    ``name`` (public: ``vireid.register_scoring``); returns ``fn`` unchanged.

    ``q``, ``g`` are :class:`Features` (torch ``.F`` (N, C, h, w), ``.G`` (N, C),
    ``.modalities``); ``ctx`` a :class:`ScoringContext` (``ctx.ccn``, ``ctx.topk``,
    ``ctx.cosine(q, g)``, ``ctx.d_ri(q, g)``, …). The keywords are the
    :class:`ScoringMode` attributes; with none of the overrides, evaluation
    (``vireid eval --scoring NAME``, ``all``), k-reciprocal re-ranking and search
    (``vireid search --scoring NAME``) all work from ``fn`` alone::

        @vireid.register_scoring("l2", uses_maps=False)
        def l2(q, g, ctx):
            return torch.cdist(q.G, g.G)
    """
    def deco(fn: DistanceFn) -> DistanceFn:
        SCORING_MODES.register(name, ScoringMode(
            name, fn, needs_ccn=needs_ccn, uses_maps=uses_maps, uses_topk=uses_topk,
            uses_fusion_weight=uses_fusion_weight,
            higher_is_better=higher_is_better, native=native, paper=paper,
            kreciprocal_offset=kreciprocal_offset, self_distance_fn=self_distance_fn,
            topk_fn=topk_fn, label=label or name), replace=replace)
        return fn
    return deco


def get_scoring(name: str) -> ScoringMode:
    """The scoring mode ``name``; ConfigError naming the modes otherwise."""
    return SCORING_MODES.get(name)


# --------------------------------------------------------------------------- built-in modes
def _cosine_candidates(q: Features, gallery: Any, k: int, ctx: ScoringContext
                       ) -> tuple[GalleryReader, Tensor, Tensor]:
    """(the gallery, S (Q, k') descending, rows (Q, k')) of the exact cosine top-k."""
    gal = GalleryReader(gallery)
    if q.G is None:
        raise ConfigError("this scoring mode needs the queries' global features G")
    S, rows, used = topk_mod.cosine_topk(q.G, gal.G(), k, backend=ctx.search_backend,
                                         cache=gal.cache())
    ctx.backend_used = used
    return gal, S, rows


def _simplified_topk(q: Features, gallery: Any, k: int, ctx: ScoringContext
                     ) -> tuple[Tensor, Tensor]:
    _, S, rows = _cosine_candidates(q, gallery, k, ctx)
    return -S, rows


def rerank_topk(q: Features, gallery: Any, k: int, ctx: ScoringContext,
                combine: Optional[PairCombine] = None) -> tuple[Tensor, Tensor]:
    """The best k of a rerank-style distance without scoring the whole gallery: each query's
    cosine top-K candidates (K = ``ctx.topk``; each candidate's maps read once) get
    ``combine(S, D_RI)`` of the pair (default: D_RI itself, the ``rerank`` mode), the next
    ones 3 − S when k > K. ``combine`` must keep the listed pairs below 2, as
    :func:`score_rerank`'s callers do. Returns (distance (Q, k'), rows (Q, k')) as
    :meth:`ScoringMode.topk`."""
    gal, S, cand = _cosine_candidates(q, gallery, max(k, ctx.topk), ctx)
    nq, depth = cand.shape[0], min(ctx.topk, cand.shape[1])
    uniq, inverse = np.unique(cand[:, :depth].numpy(), return_inverse=True)
    qi = torch.arange(nq, dtype=torch.int64).repeat_interleave(depth)
    gi = torch.from_numpy(inverse.reshape(-1).astype(np.int64))
    d = torch.as_tensor(ctx.d_ri_pairs(q, gal.take(uniq))(qi, gi)).float().reshape(nq, depth)
    if combine is not None:
        d = torch.as_tensor(combine(S[:, :depth].float(), d)).float()
    dist = torch.cat([d, 3.0 - S[:, depth:].float()], dim=1)
    return topk_mod.topk(dist, k, index=cand)


def _simplified_distance(q: Features, g: Features, ctx: ScoringContext) -> Tensor:
    return -ctx.cosine(q, g)


def _full_distance(q: Features, g: Features, ctx: ScoringContext) -> Tensor:
    return ctx.d_ri(q, g)


def _rerank_distance(q: Features, g: Features, ctx: ScoringContext) -> Tensor:
    return ctx.rerank(ctx.cosine(q, g), ctx.d_ri_pairs(q, g))


register_scoring("simplified", uses_maps=False, higher_is_better=True, label="S",
                 native="cosine similarity of global features (higher = more similar)",
                 paper="-S", kreciprocal_offset=1.0, topk_fn=_simplified_topk
                 )(_simplified_distance)
register_scoring("full", needs_ccn=True, paper="-F", label="F",
                 native="CCN difference score D_RI in [0, 1] (lower = more similar)"
                 )(_full_distance)
register_scoring("rerank", needs_ccn=True, uses_topk=True, paper="not in the paper", label="R",
                 native="CCN difference score D_RI on the simplified top-K (lower = more similar)",
                 topk_fn=rerank_topk)(_rerank_distance)
