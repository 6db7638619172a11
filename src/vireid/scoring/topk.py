"""The one top-k of vireid: per-query best k of a score matrix, chunked or merged from shards.

**Tie-break (the only one):** best score first (lowest distance, or highest similarity with
``largest=True``); equal scores by **lower gallery index**. NaN ranks last. The same rule
orders a search's matches, the candidates of rerank scoring, the merge of gallery shards
(:mod:`vireid.scoring.sharded`) and FAISS results, so a ranked list does not depend on how
the gallery was split or which backend scored it.

* :func:`topk`: the best ``k`` of each row of a (Q, N) matrix, with the gallery index of each
  column (``index``; default ``0..N-1``).
* :func:`merge_topk`: the best ``k`` of several partial lists (one per gallery block or per
  rank); exact, whatever the order of the parts, as long as each part holds its block's best
  ``k`` by the same rule.
* :class:`RunningTopK`: :func:`merge_topk` over gallery blocks as they are scored, keeping at
  most ``k`` per query (memory O(Q·k) however large the gallery).
* :func:`cosine_topk`: the exact top-k cosine similarities of query rows against a gallery's
  global features, with a chunked torch search or FAISS (``IndexFlatIP``, optional package);
  :func:`resolve_backend` is the choice between the two.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from vireid.errors import ConfigError, DataError

ArrayLike = Union[np.ndarray, Tensor]

#: Search backends of :func:`cosine_topk` (``auto`` resolves to one of the other two).
BACKENDS = ("auto", "faiss", "torch")
#: ``backend="auto"`` uses FAISS (when installed) from this many gallery images on; None =
#: never. Measured on the reference 2-core CPU (docs/scaling.md), the exact FAISS flat index
#: (faiss-cpu 1.15, AVX2) was slower than the chunked torch search at every gallery size up
#: to 10^6 and every batch size from 1 to 100 queries, so auto picks torch there. Set it
#: where FAISS is faster (other CPUs, a FAISS GPU build), or pass backend="faiss".
FAISS_MIN_GALLERY: Optional[int] = None


def topk(scores: Tensor, k: int, *, index: Optional[Tensor] = None, largest: bool = False
         ) -> tuple[Tensor, Tensor]:
    """The best ``k`` entries of each row, best first, ties by lower gallery index.

    Args:
        scores: (Q, M) distances (``largest=False``) or similarities (``largest=True``).
        k: entries kept per row; k' = min(k, M).
        index: the gallery index of each entry, (Q, M) or (M,) int64; default ``0..M-1``.

    Returns:
        (values (Q, k'), index (Q, k') int64): the rows' best entries and their gallery
        indices, best first.
    """
    if scores.dim() != 2:
        raise ConfigError(f"topk: expected a (Q, M) matrix, found shape {tuple(scores.shape)}")
    if k < 0:
        raise ConfigError(f"topk: expected k >= 0, found {k}")
    nq, m = scores.shape
    if index is None:
        index = torch.arange(m, dtype=torch.int64, device=scores.device)
    index = index.to(torch.int64)
    if index.dim() == 1 and len(index) == m:
        index = index.expand(nq, m)
    if tuple(index.shape) != (nq, m):
        raise ConfigError(f"topk: expected an index of shape {(nq, m)} or ({m},), found "
                          f"{tuple(index.shape)}")
    kk = min(int(k), m)
    if nq == 0 or kk == 0:
        return scores.new_empty(nq, kk), torch.empty(nq, kk, dtype=torch.int64,
                                                     device=scores.device)
    key = scores
    # The best k+1 of each row: when the k-th and the (k+1)-th differ, the best k are
    # decided by value alone; rows with a tie there are settled by the gallery index below.
    vals, pos = torch.topk(key, min(kk + 1, m), dim=1, largest=largest, sorted=True)
    if key.is_floating_point() and bool(torch.isnan(vals).any()):
        key = torch.nan_to_num(key, nan=float("-inf") if largest else float("inf"))
        vals, pos = torch.topk(key, min(kk + 1, m), dim=1, largest=largest, sorted=True)
    sel = pos[:, :kk]
    if kk < m:
        tied = (vals[:, kk - 1] == vals[:, kk]).nonzero().squeeze(1)
        if len(tied):
            sel = sel.clone()
            sel[tied] = _tied_rows(key[tied], index[tied], kk, largest)
    # Order each row's k by (best value first, lower gallery index): two stable sorts.
    by_index = torch.argsort(torch.gather(index, 1, sel), dim=1, stable=True)
    sel = torch.gather(sel, 1, by_index)
    by_value = torch.argsort(torch.gather(key, 1, sel), dim=1, stable=True, descending=largest)
    sel = torch.gather(sel, 1, by_value)
    return torch.gather(scores, 1, sel), torch.gather(index, 1, sel)


def _tied_rows(key: Tensor, index: Tensor, k: int, largest: bool) -> Tensor:
    """Columns of the best ``k`` of rows whose k-th value is tied: every entry better than
    the k-th value, then the tied ones of lowest gallery index. key, index: (R, M)."""
    kth = torch.topk(key, k, dim=1, largest=largest, sorted=True).values[:, -1:]
    rows, cols = (key >= kth if largest else key <= kth).nonzero(as_tuple=True)
    v, ix = key[rows, cols], index[rows, cols]
    # Candidates ordered by (row, best value first, gallery index): stable sorts, least
    # significant key first.
    order = torch.argsort(ix, stable=True)
    order = order[torch.argsort(v[order], stable=True, descending=largest)]
    order = order[torch.argsort(rows[order], stable=True)]
    counts = torch.bincount(rows, minlength=key.shape[0])
    starts = torch.cumsum(counts, 0) - counts
    take = order[(starts[:, None] + torch.arange(k, device=key.device)[None, :]).reshape(-1)]
    return cols[take].reshape(key.shape[0], k)


def merge_topk(parts: Iterable[tuple[Tensor, Tensor]], k: int, *, largest: bool = False
               ) -> tuple[Tensor, Tensor]:
    """The best ``k`` of partial top-k lists (values (Q, m_i), gallery index (Q, m_i)) of
    disjoint gallery blocks, by the module's rule; same result as :func:`topk` over the
    whole row when each part holds its block's best ``k``."""
    parts = list(parts)
    if not parts:
        raise ConfigError("merge_topk: expected at least one partial list")
    values = torch.cat([p[0] for p in parts], dim=1)
    index = torch.cat([p[1].to(torch.int64) for p in parts], dim=1)
    return topk(values, k, index=index, largest=largest)


class RunningTopK:
    """Best ``k`` per query over gallery blocks added one at a time (memory O(Q·k)).

    ``add(scores (Q, n), start)`` scores gallery indices ``start..start+n-1`` (or ``index``
    (Q, n) / (n,) for other columns); ``result()`` is ``(values (Q, k'), index (Q, k'))``
    best first, as :func:`topk` over all blocks at once would give.
    """

    def __init__(self, k: int, largest: bool = False) -> None:
        self.k = int(k)
        self.largest = largest
        self._best: Optional[tuple[Tensor, Tensor]] = None

    def add(self, scores: Tensor, start: int = 0, index: Optional[Tensor] = None) -> None:
        if index is None:
            index = torch.arange(start, start + scores.shape[1], dtype=torch.int64,
                                 device=scores.device)
        part = topk(scores, self.k, index=index, largest=self.largest)
        self._best = part if self._best is None else merge_topk([self._best, part], self.k,
                                                                largest=self.largest)

    def result(self) -> tuple[Tensor, Tensor]:
        if self._best is None:
            raise DataError("the gallery is empty")
        return self._best


# --------------------------------------------------------------------------- cosine search
def faiss_available() -> bool:
    """True when the optional ``faiss`` module can be imported."""
    try:
        import faiss  # noqa: F401  (late: an optional package)
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, gallery_size: int) -> str:
    """``"faiss"`` or ``"torch"`` for a requested backend and gallery size.

    Raises:
        ConfigError: unknown backend, or ``faiss`` requested but not installed.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"search backend: expected one of {', '.join(BACKENDS)}, found {backend!r}")
    if backend == "faiss":
        if not faiss_available():
            raise ConfigError("search backend faiss: the faiss module is not installed "
                              "(pip install faiss-cpu, or `pip install vireid[faiss]`); "
                              "use --backend torch")
        return "faiss"
    if backend == "torch":
        return "torch"
    if FAISS_MIN_GALLERY is not None and gallery_size >= FAISS_MIN_GALLERY and faiss_available():
        return "faiss"
    return "torch"


def _np32(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def l2_normalize(x: ArrayLike, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` (N, C) scaled to unit length (zero rows stay zero), float32."""
    x = _np32(x)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, eps)


def cosine_topk(query_G: ArrayLike, gallery_G: ArrayLike, k: int, *, backend: str = "auto",
                block_elems: int = 1 << 24, cache: Optional[dict[str, Any]] = None
                ) -> tuple[Tensor, Tensor, str]:
    """Top-k cosine similarities of each query against a gallery's global features.

    query_G: (Q, C); gallery_G: (N, C). Both backends are exact: FAISS (``IndexFlatIP`` on
    L2-normalised rows; its ties are re-ordered by the module's rule, which is exact
    unless a tie straddles its k-th place) and a chunked torch search (gallery blocks of
    ``block_elems // Q`` rows, so about 4·block_elems bytes of scores at a time, merged by
    :class:`RunningTopK`). ``cache``: a dict kept with the gallery, where the normalised
    gallery (and the FAISS index) are stored for the next call.

    Returns:
        (S (Q, k') float32 descending, rows (Q, k') int64, the backend used), k' = min(k, N);
        equal similarities by lower row.
    """
    if k < 1:
        raise ConfigError(f"topk: expected an integer ≥ 1, found {k}")
    n = len(gallery_G)
    if n == 0:
        raise DataError("the gallery is empty")
    used = resolve_backend(backend, n)
    cache = {} if cache is None else cache
    qn = l2_normalize(query_G)
    if "Gn" not in cache:
        cache["Gn"] = l2_normalize(gallery_G)
    gn = cache["Gn"]
    k = min(int(k), n)
    if used == "faiss":
        if "faiss" not in cache:
            import faiss  # late: an optional package

            cache["faiss"] = faiss.IndexFlatIP(gn.shape[1])
            cache["faiss"].add(gn)
        scores, rows = cache["faiss"].search(qn, k)
        s, i = topk(torch.from_numpy(scores), k, index=torch.from_numpy(rows.astype(np.int64)),
                    largest=True)
        return s, i, used
    qt = torch.from_numpy(qn)
    rows_per_block = max(1, block_elems // max(1, len(qt)))
    best = RunningTopK(k, largest=True)
    for lo in range(0, n, rows_per_block):
        best.add(qt @ torch.from_numpy(gn[lo:lo + rows_per_block]).T, lo)
    s, i = best.result()
    return s, i, used
