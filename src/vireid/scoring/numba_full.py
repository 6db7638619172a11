"""The fused CPU kernel (numba) for the two weighted-L1 sums of folded full mode.

``weighted_l1_numba(X, WX, Y, WY)`` gives, for every (query q, gallery g) pair,
OX[q, g] = Σ_d |X[q,d] − Y[g,d]|·WX[q,d] and OY[q, g] = Σ_d |X[q,d] − Y[g,d]|·WY[g,d]
(:mod:`vireid.scoring.fastccn` explains why full mode reduces to them) without
materialising any Q×G×D tensor: cache-sized (query block × gallery block × d-chunk) tiles
with a 2×2 register tile, float32 products summed in float32 within a d-chunk and in float64
across chunks. numba is a dependency, but :mod:`vireid.scoring.fastccn` falls back to torch
where it does not import (``AVAILABLE``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

try:  # numba is a dependency, but the torch path must work without it
    import numba as nb

    AVAILABLE = True
except Exception:  # pragma: no cover - exercised only where numba is missing
    AVAILABLE = False

# Cache blocking: a block of QB queries × GB gallery items is swept one d-chunk of TD values
# at a time by 2×2 register tiles (each query row chunk is reused for GB/2 gallery pairs). TD
# also bounds how many float32 products are summed (per SIMD lane: TD/8) before they are
# added to the float64 accumulator. Values tuned on the 2-core EPYC (AVX2) this was written
# on; see docs/performance.md.
QB, GB, TD = 32, 32, 2048


def _as_np(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


def weighted_l1_numba(X: Tensor, WX: Tensor, Y: Tensor, WY: Tensor,
                      mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """OX, OY (Q, G) float32 of X, WX (Q, D) and Y, WY (G, D); with ``mask`` (Q, G) bool only
    the pairs where it is True are computed (the others are 0). Allocates nothing beyond the
    outputs."""
    xs, wxs, ys, wys = (_as_np(t) for t in (X, WX, Y, WY))
    ox = np.empty((xs.shape[0], ys.shape[0]), dtype=np.float32)
    oy = np.empty_like(ox)
    if mask is None:
        m, use = np.zeros((1, 1), dtype=np.bool_), False
    else:
        m, use = mask.detach().cpu().numpy().astype(np.bool_, copy=False), True
        ox.fill(0.0)
        oy.fill(0.0)
    # numba's pool starts here, not when threads are set: a process that never scores (a
    # training rank) then has no numba threads, which gloo ranks could trip over at exit.
    nb.set_num_threads(max(1, min(torch.get_num_threads(), nb.config.NUMBA_NUM_THREADS)))
    _wl1_blocked(xs, wxs, ys, wys, m, use, ox, oy, QB, GB, TD)
    return torch.from_numpy(ox), torch.from_numpy(oy)


if AVAILABLE:
    # Reassociation lets LLVM vectorise the float32 reductions (it sums 8 lanes and several
    # accumulators separately); no-NaN/no-Inf assumptions are NOT enabled, so non-finite
    # features still propagate.
    _FASTMATH = {"reassoc", "contract"}

    @nb.njit(parallel=True, fastmath=_FASTMATH, boundscheck=False, cache=True, nogil=True)
    def _wl1_blocked(X, WX, Y, WY, mask, use_mask, OX, OY, qb, gb, td):  # pragma: no cover - compiled
        nq, nd = X.shape
        ng = Y.shape[0]
        nbq = (nq + qb - 1) // qb
        nbg = (ng + gb - 1) // gb
        for blk in nb.prange(nbq * nbg):
            q0 = (blk // nbg) * qb
            g0 = (blk % nbg) * gb
            q1 = min(nq, q0 + qb)
            g1 = min(ng, g0 + gb)
            # One spare row and column receive the duplicated results of odd edges.
            acc = np.zeros((2, q1 - q0 + 1, g1 - g0 + 1), dtype=np.float64)
            for d0 in range(0, nd, td):
                # Unsigned loop bounds: numba then emits no negative-index wrap-around code
                # and the d-loop vectorises (8 float32 lanes on AVX2).
                lo = np.uint64(d0)
                hi = np.uint64(min(nd, d0 + td))
                for g in range(g0, g1, 2):
                    gg = min(g + 1, g1 - 1)
                    yr0 = Y[g]
                    yr1 = Y[gg]
                    wyr0 = WY[g]
                    wyr1 = WY[gg]
                    for q in range(q0, q1, 2):
                        qq = min(q + 1, q1 - 1)
                        if use_mask:
                            if not (mask[q, g] or mask[q, gg] or mask[qq, g] or mask[qq, gg]):
                                continue
                        xr0 = X[q]
                        xr1 = X[qq]
                        wxr0 = WX[q]
                        wxr1 = WX[qq]
                        # 2 queries × 2 gallery register tile, both directions: |x − y| is
                        # computed once and used by both weighted sums.
                        a00 = np.float32(0.0)
                        a01 = np.float32(0.0)
                        a10 = np.float32(0.0)
                        a11 = np.float32(0.0)
                        b00 = np.float32(0.0)
                        b01 = np.float32(0.0)
                        b10 = np.float32(0.0)
                        b11 = np.float32(0.0)
                        for d in range(lo, hi):
                            u0 = xr0[d]
                            u1 = xr1[d]
                            v0 = yr0[d]
                            v1 = yr1[d]
                            e = abs(u0 - v0)
                            a00 += e * wxr0[d]
                            b00 += e * wyr0[d]
                            e = abs(u0 - v1)
                            a01 += e * wxr0[d]
                            b01 += e * wyr1[d]
                            e = abs(u1 - v0)
                            a10 += e * wxr1[d]
                            b10 += e * wyr0[d]
                            e = abs(u1 - v1)
                            a11 += e * wxr1[d]
                            b11 += e * wyr1[d]
                        i = q - q0
                        j = g - g0
                        i1 = i + 1 if qq != q else q1 - q0
                        j1 = j + 1 if gg != g else g1 - g0
                        acc[0, i, j] += a00
                        acc[1, i, j] += b00
                        acc[0, i, j1] += a01
                        acc[1, i, j1] += b01
                        acc[0, i1, j] += a10
                        acc[1, i1, j] += b10
                        acc[0, i1, j1] += a11
                        acc[1, i1, j1] += b11
            for i in range(q1 - q0):
                for j in range(g1 - g0):
                    OX[q0 + i, g0 + j] = acc[0, i, j]
                    OY[q0 + i, g0 + j] = acc[1, i, j]
