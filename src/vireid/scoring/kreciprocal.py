"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li: "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), as a post-process of any query x gallery distance.

What is computed is the formulation of the field's widely used reference implementation (the
``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3)`` found in the
authors' person-re-ranking code and copied into the AGW / Cross-Modal-Re-ID-baseline,
Person_reID_baseline_pytorch and many other repositories). Facts of that formulation,
restated (N = Q + G, all images, queries first)::

    D  = [[q_q, q_g], [q_g^T, g_g]]                     (N, N) input distances
    M  = (D**2 / column-max of D**2)^T  in float32      -> row i is divided by its max
                                                          (the input is squared first!)
    rank(i)   = np.argsort(M[i])                        (numpy's default, unstable sort)
    R(i, k)   = {j in rank(i)[:k+1] : i in rank(j)[:k+1]}        k-reciprocal set, k = k1
    R*(i)     = R(i, k1) U  R(c, round(k1/2)) for every c in R(i, k1) with
                |R(c, round(k1/2)) n R(i, k1)| > 2/3 |R(c, round(k1/2))|
                (round = numpy's half-to-even ``np.around``)
    V[i, j]   = exp(-M[i, j]) / sum_{j' in R*(i)} exp(-M[i, j'])   for j in R*(i), else 0
    V_qe[i]   = mean of V[rank(i)[:k2]]                 local query expansion (if k2 != 1)
    J[i, j]   = 1 - m / (2 - m),  m = sum_k min(V[i, k], V[j, k])    Jaccard distance
    final     = J * (1 - lambda) + M * lambda,   restricted to query rows, gallery columns

so the result is a float32 (Q, G) distance, lower = closer. Note that ``M`` (and hence the
``lambda`` term) is the *squared, row-normalised* input distance.

Differences from the reference (none changes the definition):

* Memory. The reference materialises several (N, N) float32 matrices (about 16 GB at
  N = 30 000). Here rows are processed in chunks of ``c = max(1, max_elems // N)`` rows:
  peak extra memory is about ``c * N * 32`` bytes for the dense row chunks (float32 rows,
  their argsort, and the float64 Jaccard accumulators; ``max_elems = 2**22`` gives about
  130 MB) plus ``O(N * (k1 + 1))`` for the neighbour lists and the sparse ``V`` / ``V_qe``
  (at most ``N * |R*|`` and ``k2`` times that many non-zeros; typically tens of MB at
  N = 30 000). Only the first ``max(k1 + 1, k2)`` columns of each row's ranking are kept; the
  full row is still argsorted, so ties break exactly as in the reference.
* Rounding. Sums over ``R*(i)``, the ``k2`` rows of the expansion and the Jaccard
  numerator are accumulated in a different order (and the Jaccard numerator in float64), so
  values agree with the reference to float32 rounding (about 1e-7 relative), not bit for bit.

Default parameters are the paper's and the reference's: ``k1=20, k2=6, lambda=0.3``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from vireid.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = [
    "re_ranking",
    "rerank_distance",
    "rerank_features",
    "pairwise_distance",
    "DEFAULT_K1",
    "DEFAULT_K2",
    "DEFAULT_LAMBDA",
    "KReciprocal",
]

#: The paper's and the reference code's defaults.
DEFAULT_K1 = 20
DEFAULT_K2 = 6
DEFAULT_LAMBDA = 0.3
#: Default bound on the elements of one dense row chunk (rows x N).
DEFAULT_MAX_ELEMS = 1 << 22

Metric = Literal["euclidean", "cosine"]


@dataclass(frozen=True)
class KReciprocal:
    """A re-ranking setting (``vireid eval --kreciprocal`` / ``--rerank-k1/-k2/-lambda``).

    ``apply(q_g, q_q, g_g)`` is :func:`rerank_distance` with these parameters.
    """

    k1: int = DEFAULT_K1
    k2: int = DEFAULT_K2
    lam: float = DEFAULT_LAMBDA
    max_elems: int = DEFAULT_MAX_ELEMS

    def __post_init__(self) -> None:
        _check_params(self.k1, self.k2, self.lam)

    def apply(self, q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray) -> np.ndarray:
        """(Q, G), (Q, Q), (G, G) distances -> the re-ranked (Q, G) float32 distance."""
        return rerank_distance(q_g, q_q, g_g, k1=self.k1, k2=self.k2, lam=self.lam,
                               max_elems=self.max_elems)

    def to_dict(self) -> dict[str, Any]:
        """What a results JSON records: ``{"k1", "k2", "lambda"}``."""
        return {"k1": int(self.k1), "k2": int(self.k2), "lambda": float(self.lam)}


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def _check_params(k1: int, k2: int, lam: float) -> None:
    for name, k in (("k1", k1), ("k2", k2)):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"re-ranking {name} must be an integer >= 1, got {k!r}")
    if not isinstance(lam, (int, float, np.floating)) or not 0.0 <= float(lam) <= 1.0:
        raise ConfigError(f"re-ranking lambda must be a number in [0, 1], got {lam!r}")


def _check_dists(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q_g, q_q, g_g = (np.asarray(a) for a in (q_g, q_q, g_g))
    for name, a in (("q_g_dist", q_g), ("q_q_dist", q_q), ("g_g_dist", g_g)):
        if a.ndim != 2:
            raise DataError(f"re-ranking: {name} must be a 2-D matrix, got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.number):
            raise DataError(f"re-ranking: {name} must be numeric, got dtype {a.dtype}")
    nq, ng = q_g.shape
    if nq == 0 or ng == 0:
        raise DataError(f"re-ranking: q_g_dist must be non-empty, got shape {q_g.shape}")
    if q_q.shape != (nq, nq):
        raise DataError(f"re-ranking: q_q_dist must be ({nq}, {nq}) to match q_g_dist "
                        f"{q_g.shape}, got {q_q.shape}")
    if g_g.shape != (ng, ng):
        raise DataError(f"re-ranking: g_g_dist must be ({ng}, {ng}) to match q_g_dist "
                        f"{q_g.shape}, got {g_g.shape}")
    for name, a in (("q_g_dist", q_g), ("q_q_dist", q_q), ("g_g_dist", g_g)):
        if not np.all(np.isfinite(a)):
            raise DataError(f"re-ranking: {name} holds NaN or infinite values")
    # The reference squares in the input's precision, then casts to float32.
    dtype = np.result_type(q_g.dtype, q_q.dtype, g_g.dtype, np.float32)
    return q_g.astype(dtype, copy=False), q_q.astype(dtype, copy=False), g_g.astype(dtype, copy=False)


class _Rows:
    """Rows of ``M`` (module docstring) computed on demand from the three blocks.

    Row i of M is column i of D, squared, divided by that column's max (in float32), so
    only column maxima are kept between calls.
    """

    def __init__(self, q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, chunk: int):
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.nq, self.ng = q_g.shape
        self.n = self.nq + self.ng
        self.chunk = chunk
        self.colmax = np.empty(self.n, dtype=np.float32)
        for start in range(0, self.n, chunk):
            stop = min(self.n, start + chunk)
            self.colmax[start:stop] = self._squared(start, stop).max(axis=1)
        if np.any(self.colmax <= 0):
            bad = int(np.flatnonzero(self.colmax <= 0)[0])
            raise DataError(f"re-ranking: every distance of image {bad} is 0 (the reference "
                            "divides by the row maximum); are the features all identical?")

    def _squared(self, start: int, stop: int) -> np.ndarray:
        """Columns start..stop-1 of D, transposed, squared, as float32: (stop-start, N)."""
        nq = self.nq
        parts = []
        if start < nq:  # columns of [q_q; q_g^T]: rows of [q_q^T, q_g]
            s, e = start, min(stop, nq)
            parts.append(np.concatenate([self.q_q[:, s:e].T, self.q_g[s:e]], axis=1))
        if stop > nq:  # columns of [q_g; g_g]: rows of [q_g^T, g_g^T]
            s, e = max(start, nq) - nq, stop - nq
            parts.append(np.concatenate([self.q_g[:, s:e].T, self.g_g[:, s:e].T], axis=1))
        block = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return np.power(block, 2).astype(np.float32)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 of M, float32 (stop-start, N)."""
        return self._squared(start, stop) / self.colmax[start:stop, None]

    def blocks(self, stop: int | None = None):
        stop = self.n if stop is None else stop
        for start in range(0, stop, self.chunk):
            yield start, min(stop, start + self.chunk)


# ---------------------------------------------------------------------------------------------
# the algorithm
# ---------------------------------------------------------------------------------------------
def _reciprocal(rank: np.ndarray, width: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """k-reciprocal sets of ``rows`` with ``width = k + 1`` neighbours.

    rank: (N, >= width) int ranked neighbour lists. Returns (members (R, width), mask (R,
    width)): members = rank[rows, :width] in rank order, mask = "i is among the first width
    neighbours of that member" (the reference's backward check).
    """
    fwd = rank[rows, :width]  # (R, width)
    back = rank[fwd, :width]  # (R, width, width)
    mask = (back == rows[:, None, None]).any(axis=2)
    return fwd, mask


def _expansion_sets(rank: np.ndarray, k1: int, chunk: int) -> sp.csr_matrix:
    """Boolean CSR (N, N) of R*(i) for every i (module docstring)."""
    n = rank.shape[0]
    w1 = min(k1 + 1, n)
    wh = min(int(np.around(k1 / 2.0)) + 1, n)
    all_rows = np.arange(n)
    # R(c, round(k1/2)) of every node, padded with -1 where the backward check fails.
    half_fwd, half_mask = _reciprocal(rank, wh, all_rows)
    half = np.where(half_mask, half_fwd, -1)
    half_size = half_mask.sum(axis=1)
    out_r, out_c = [], []
    # (rows, w1, wh, w1) booleans per step: keep it near the dense-chunk budget.
    step = max(1, chunk * n // max(1, w1 * wh * w1))
    for start in range(0, n, step):
        rows = all_rows[start:start + step]
        fwd, mask = _reciprocal(rank, w1, rows)
        recip = np.where(mask, fwd, -2)  # R(i, k1), padded with -2 (never equals a member/pad)
        cand = np.where(mask, fwd, 0)  # candidate c of each slot (masked slots ignored below)
        cand_half = half[cand]  # (R, w1, wh)
        inter = (cand_half[..., None] == recip[:, None, None, :]).any(axis=3).sum(axis=2)
        accept = mask & (inter > 2.0 / 3.0 * half_size[cand])
        r_loc, c_slot = np.nonzero(mask)
        out_r.append(rows[r_loc])
        out_c.append(fwd[r_loc, c_slot])
        a_loc, a_slot = np.nonzero(accept)
        members = cand_half[a_loc, a_slot]  # (A, wh), -1 pads
        keep = members >= 0
        out_r.append(np.repeat(rows[a_loc], keep.sum(axis=1)))
        out_c.append(members[keep])
    r = np.concatenate(out_r)
    c = np.concatenate(out_c)
    sets = sp.csr_matrix((np.ones(r.size, dtype=np.int8), (r, c)), shape=(n, n))
    sets.sum_duplicates()
    sets.sort_indices()
    return sets


def rerank_distance(
    dist_qg: np.ndarray,
    dist_qq: np.ndarray,
    dist_gg: np.ndarray,
    k1: int = DEFAULT_K1,
    k2: int = DEFAULT_K2,
    lam: float = DEFAULT_LAMBDA,
    max_elems: int = DEFAULT_MAX_ELEMS,
) -> np.ndarray:
    """k-reciprocal re-ranked distance, memory-bounded (see the module docstring).

    dist_qg: (Q, G), dist_qq: (Q, Q), dist_gg: (G, G) distances, lower = closer (e.g.
    Euclidean distances of the features, as the reference's callers pass). k1, k2 >= 1,
    lam in [0, 1]; max_elems bounds the elements of one dense row chunk.
    Returns the final (Q, G) float32 distance, lower = closer.
    """
    _check_params(k1, k2, lam)
    if not isinstance(max_elems, (int, np.integer)) or max_elems < 1:
        raise ConfigError(f"max_elems must be a positive integer, got {max_elems!r}")
    q_g, q_q, g_g = _check_dists(dist_qg, dist_qq, dist_gg)
    nq, ng = q_g.shape
    n = nq + ng
    chunk = max(1, int(max_elems) // n)
    m = _Rows(q_g, q_q, g_g, chunk)
    width = min(max(k1 + 1, k2), n)

    # Pass 1: ranked neighbour lists (full argsort of each row: the reference's tie order).
    rank_dtype = np.int32 if n < 2**31 else np.int64
    rank = np.empty((n, width), dtype=rank_dtype)
    for s, e in m.blocks():
        rank[s:e] = np.argsort(m.rows(s, e), axis=1)[:, :width]

    # Pass 2: R*(i) and the Gaussian weights V.
    sets = _expansion_sets(rank, k1, chunk)
    v_data = np.empty(sets.nnz, dtype=np.float32)
    for s, e in m.blocks():
        lo, hi = sets.indptr[s], sets.indptr[e]
        r_loc = np.repeat(np.arange(e - s), np.diff(sets.indptr[s:e + 1]))
        w = np.exp(-m.rows(s, e)[r_loc, sets.indices[lo:hi]])  # float32, as the reference
        sums = np.bincount(r_loc, weights=w, minlength=e - s).astype(np.float32)
        v_data[lo:hi] = w / sums[r_loc]
    v = sp.csr_matrix((v_data, sets.indices, sets.indptr), shape=(n, n))

    # Local query expansion: V_qe[i] = mean of V over rank(i)[:k2].
    if k2 != 1:
        kk = min(k2, n)
        avg = sp.csr_matrix((np.ones(n * kk, dtype=np.float32),
                             rank[:, :kk].reshape(-1).astype(np.int64),
                             np.arange(0, n * kk + 1, kk)), shape=(n, n))
        v = (avg @ v).tocsr()
        v.data = (v.data / np.float32(kk)).astype(np.float32)
        v.eliminate_zeros()
        v.sort_indices()
    del rank

    # Pass 3: Jaccard distance of query rows against every column, via the inverted index
    # (the CSC form of V: for each k, the images j with V[j, k] != 0).
    vc = v.tocsc()
    col_len = np.diff(vc.indptr)
    out = np.empty((nq, ng), dtype=np.float32)
    lam32 = float(lam)
    for s, e in m.blocks(nq):
        lo, hi = v.indptr[s], v.indptr[e]
        r_loc = np.repeat(np.arange(e - s), np.diff(v.indptr[s:e + 1]))
        ks = v.indices[lo:hi]
        vik = v.data[lo:hi]
        lens = col_len[ks]
        # Concatenate the index ranges vc.indptr[k]..vc.indptr[k+1] of every (i, k) entry.
        total = int(lens.sum())
        offs = np.repeat(vc.indptr[ks] - (np.cumsum(lens) - lens), lens) + np.arange(total)
        j = vc.indices[offs]
        contrib = np.minimum(np.repeat(vik, lens), vc.data[offs])
        flat = np.repeat(r_loc, lens) * n + j
        temp = np.bincount(flat, weights=contrib, minlength=(e - s) * n)
        temp = temp.reshape(e - s, n)[:, nq:].astype(np.float32)
        jac = 1 - temp / (np.float32(2.0) - temp)
        orig = m.rows(s, e)[:, nq:]
        out[s:e] = jac * (1 - lam32) + orig * lam32
    log.debug("k-reciprocal re-ranking: %d queries, %d gallery, k1=%d k2=%d lambda=%g",
              nq, ng, k1, k2, lam)
    return out


def re_ranking(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = DEFAULT_K1,
    k2: int = DEFAULT_K2,
    lambda_value: float = DEFAULT_LAMBDA,
) -> np.ndarray:
    """Drop-in for the field's ``re_ranking``: same signature, same (Q, G) result.

    q_g_dist: (Q, G), q_q_dist: (Q, Q), g_g_dist: (G, G) distances (lower = closer).
    Returns the final float32 (Q, G) distance. Memory-bounded (see :func:`rerank_distance`).
    """
    return rerank_distance(q_g_dist, q_q_dist, g_g_dist, k1=k1, k2=k2, lam=lambda_value)


# ---------------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------------
def pairwise_distance(a: np.ndarray, b: np.ndarray, metric: Metric = "euclidean") -> np.ndarray:
    """Distances between the rows of ``a: (M, D)`` and ``b: (N, D)`` -> ``(M, N)`` float32.

    ``euclidean``: ``sqrt(max(|a|^2 + |b|^2 - 2 a.b, 0))`` (the person-re-ranking code's
    ``compute_dist``; re_ranking then squares it). ``cosine``: ``1 - cos(a, b)`` on
    L2-normalised rows. Computed in float64 and returned as float32.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise DataError(f"pairwise_distance needs (M, D) and (N, D) features, got {a.shape} "
                        f"and {b.shape}")
    if metric == "euclidean":
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return np.sqrt(np.maximum(sq, 0.0)).astype(np.float32)
    if metric == "cosine":
        an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return (1.0 - an @ bn.T).astype(np.float32)
    raise ConfigError(f"distance metric must be 'euclidean' or 'cosine', got {metric!r}")


def rerank_features(
    query: np.ndarray,
    gallery: np.ndarray,
    k1: int = DEFAULT_K1,
    k2: int = DEFAULT_K2,
    lam: float = DEFAULT_LAMBDA,
    metric: Metric = "euclidean",
    max_elems: int = DEFAULT_MAX_ELEMS,
) -> np.ndarray:
    """Re-ranked (Q, G) distance from features ``query: (Q, D)`` and ``gallery: (G, D)``.

    Builds the three distance blocks with :func:`pairwise_distance` (``metric``; the
    reference's callers use the Euclidean distance) and calls :func:`rerank_distance`. The
    (G, G) block is materialised: G^2 * 4 bytes (1.6 GB at G = 20 000).
    """
    _check_params(k1, k2, lam)
    return rerank_distance(pairwise_distance(query, gallery, metric),
                           pairwise_distance(query, query, metric),
                           pairwise_distance(gallery, gallery, metric),
                           k1=k1, k2=k2, lam=lam, max_elems=max_elems)
