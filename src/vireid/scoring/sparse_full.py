r"""Zero-skipping CPU kernel (numba) for the two weighted-L1 sums of folded full mode.

Same sums as :func:`vireid.scoring.fastccn.weighted_l1`:

    OX[q, g] = Σ_d |x_d − y_d| · wx_d,   OY[q, g] = Σ_d |x_d − y_d| · wy_d

with x = X[q], wx = WX[q], y = Y[g], wy = WY[g]. Features after the last ReLU hold exact
zeros; where x_d = 0 the term |x_d − y_d| is |y_d|, where y_d = 0 it is |x_d|, and where both
are 0 it is 0. Splitting d by the query's support S_q = {d : x_d ≠ 0} (exact, any sign):

    OX = Σ_{d ∈ S_q} wx_d |x_d − y_d|            + Σ_{d ∉ S_q, y_d ≠ 0} wx_d |y_d|
    OY = Σ_{d ∈ S_q} wy_d (|x_d − y_d| − |y_d|)  + Σ_d wy_d |y_d|

* pass 1 walks only the query's non-zeros (|S_q| = ρ·D values per pair instead of D): for
  each d ∈ S_q it broadcasts x_d, wx_d and sweeps a transposed gallery tile Y[g0:g1, d];
* pass 2 is a sparse × dense product: the gallery's non-zeros |y_d| against
  WX0 = WX ⊙ [X = 0], transposed to (D, Q) so each d gives one contiguous row of queries;
* Σ_d wy_d |y_d| is one number per gallery item.

Every term is a plain sum of the original terms regrouped, so the result equals the dense
kernel up to float32 rounding (sums run in float32 within a d-chunk of ``td`` values and in
float64 across chunks). Work per pair ≈ 2·ρ·D instead of D: it pays off when the density ρ
(fraction of non-zeros) is low; ``fastccn.resolve_backend`` picks it then.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np
import torch
from torch import Tensor

from vireid.errors import ConfigError

# Gallery items per parallel block (the transposed tile is TD × GB floats ×2 = 128 KiB,
# L2-resident) and values per d-chunk.
_GB, _TD = 64, 256
_FASTMATH = {"reassoc", "contract"}


@nb.njit(parallel=True, boundscheck=False, cache=True)
def _csr(X, td):  # pragma: no cover - compiled
    """Row-wise non-zeros of X (N, D): indices, values, and per-row chunk pointers
    ptr[n, c] = first entry of row n with index >= c·td (ptr[n, nchunks] = end of row)."""
    n, nd = X.shape
    nch = (nd + td - 1) // td
    cnt = np.zeros(n + 1, dtype=np.int64)
    for i in nb.prange(n):
        c = 0
        for d in range(nd):
            if X[i, d] != 0:
                c += 1
        cnt[i + 1] = c
    start = np.cumsum(cnt)
    idx = np.empty(start[n], dtype=np.int32)
    val = np.empty(start[n], dtype=np.float32)
    ptr = np.empty((n, nch + 1), dtype=np.int64)
    for i in nb.prange(n):
        k = start[i]
        for c in range(nch):
            ptr[i, c] = k
            for d in range(c * td, min(nd, (c + 1) * td)):
                v = X[i, d]
                if v != 0:
                    idx[k] = d
                    val[k] = v
                    k += 1
        ptr[i, nch] = k
    return idx, val, ptr


@nb.njit(parallel=True, fastmath=_FASTMATH, boundscheck=False, cache=True, nogil=True)
def _sparse_kernel(qidx, qx, qwx, qptr, WX0T, Y, WY, gidx, gabs, gptr, gsum, OX, OY, gb, td):  # pragma: no cover - compiled
    nq = qptr.shape[0]
    ng, nd = Y.shape
    nch = qptr.shape[1] - 1
    nbg = (ng + gb - 1) // gb
    for blk in nb.prange(nbg):
        g0 = blk * gb
        g1 = min(ng, g0 + gb)
        gl = g1 - g0
        yt = np.zeros((td, gb), dtype=np.float32)
        wyt = np.zeros((td, gb), dtype=np.float32)
        ayt = np.zeros((td, gb), dtype=np.float32)
        accx = np.zeros((nq, gb), dtype=np.float64)
        accy = np.zeros((nq, gb), dtype=np.float64)
        tx = np.empty(gb, dtype=np.float32)
        ty = np.empty(gb, dtype=np.float32)
        t2 = np.empty(nq, dtype=np.float32)
        for c in range(nch):
            d0 = c * td
            d1 = min(nd, d0 + td)
            # Transposed gallery tile (d, g); columns past g1 stay 0 and are never stored.
            for g in range(gl):
                for d in range(d0, d1):
                    v = Y[g0 + g, d]
                    yt[d - d0, g] = v
                    ayt[d - d0, g] = abs(v)
                    wyt[d - d0, g] = WY[g0 + g, d]
            # Pass 1: the query's non-zeros against the gallery tile.
            for q in range(nq):
                s = qptr[q, c]
                e = qptr[q, c + 1]
                if s == e:
                    continue
                for g in range(gb):
                    tx[g] = 0.0
                    ty[g] = 0.0
                for k in range(s, e):
                    dd = qidx[k] - d0
                    xv = qx[k]
                    wxv = qwx[k]
                    for g in range(gb):
                        ev = abs(xv - yt[dd, g])
                        tx[g] += wxv * ev
                        ty[g] += (ev - ayt[dd, g]) * wyt[dd, g]
                for g in range(gl):
                    accx[q, g] += tx[g]
                    accy[q, g] += ty[g]
            # Pass 2: the gallery's non-zeros against WX0 (queries with x_d = 0).
            for g in range(gl):
                s = gptr[g0 + g, c]
                e = gptr[g0 + g, c + 1]
                if s == e:
                    continue
                for q in range(nq):
                    t2[q] = 0.0
                for k in range(s, e):
                    row = WX0T[gidx[k]]
                    av = gabs[k]
                    for q in range(nq):
                        t2[q] += av * row[q]
                for q in range(nq):
                    accx[q, g] += t2[q]
        for q in range(nq):
            for g in range(gl):
                OX[q, g0 + g] = accx[q, g]
                OY[q, g0 + g] = accy[q, g] + gsum[g0 + g]


@nb.njit(parallel=True, fastmath=_FASTMATH, boundscheck=False, cache=True)
def _abs_weighted_sum(Y, WY):  # pragma: no cover - compiled
    n, nd = Y.shape
    out = np.empty(n, dtype=np.float64)
    for i in nb.prange(n):
        s = 0.0
        for d in range(nd):
            s += np.float64(abs(Y[i, d]) * WY[i, d])
        out[i] = s
    return out


@dataclass
class SparseGallery:
    """The gallery side prepared once for many query chunks: Y, WY (G, D) float32, its
    non-zeros (indices, |values|, chunk pointers) and Σ_d wy_d |y_d| per item (G,)."""

    Y: np.ndarray
    WY: np.ndarray
    idx: np.ndarray
    absval: np.ndarray
    ptr: np.ndarray
    abs_wsum: np.ndarray

    @property
    def density(self) -> float:
        return float(self.idx.size) / max(1, self.Y.size)


def _np32(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


def prepare_gallery(Y: Tensor, WY: Tensor) -> SparseGallery:
    """Y, WY (G, D) -> :class:`SparseGallery` (CPU, float32)."""
    y, wy = _np32(Y), _np32(WY)
    if y.ndim != 2 or y.shape != wy.shape:
        raise ConfigError(f"sparse weighted_l1: expected Y, WY of one shape (G, D), got "
                          f"{y.shape} and {wy.shape}")
    idx, val, ptr = _csr(y, _TD)
    return SparseGallery(y, wy, idx, np.abs(val), ptr, _abs_weighted_sum(y, wy))


def weighted_l1_sparse(X: Tensor, WX: Tensor, Y: Tensor | SparseGallery,
                       WY: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """OX, OY (Q, G) float32 of :func:`vireid.scoring.fastccn.weighted_l1`, skipping zeros.

    X, WX: (Q, D); Y, WY: (G, D), or ``Y`` a :class:`SparseGallery` from
    :func:`prepare_gallery` (then ``WY`` is None) to reuse its preparation across query
    chunks. Memory beyond the outputs: the query chunk's non-zeros and WX0ᵀ (Q·D floats),
    per thread a (Q, 64) float64 accumulator pair.
    """
    gal = Y if isinstance(Y, SparseGallery) else prepare_gallery(Y, WY)  # type: ignore[arg-type]
    x, wx = _np32(X), _np32(WX)
    if x.ndim != 2 or x.shape != wx.shape or x.shape[1] != gal.Y.shape[1]:
        raise ConfigError(f"sparse weighted_l1: expected X, WX (Q, {gal.Y.shape[1]}), got "
                          f"{x.shape} and {wx.shape}")
    nq, ng = x.shape[0], gal.Y.shape[0]
    ox = np.zeros((nq, ng), dtype=np.float32)
    oy = np.zeros((nq, ng), dtype=np.float32)
    if nq and ng:
        qidx, qx, qptr = _csr(x, _TD)
        qwx = wx[np.repeat(np.arange(nq), np.diff(qptr[:, [0, -1]], axis=1)[:, 0]), qidx]
        wx0t = np.ascontiguousarray(np.where(x == 0, wx, np.float32(0)).T)
        _sparse_kernel(qidx, qx, qwx, qptr, wx0t, gal.Y, gal.WY, gal.idx, gal.absval, gal.ptr,
                       gal.abs_wsum, ox, oy, _GB, _TD)
    return torch.from_numpy(ox), torch.from_numpy(oy)


__all__ = ["SparseGallery", "prepare_gallery", "weighted_l1_sparse"]
