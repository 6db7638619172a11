r"""Fused GPU kernel (Triton) for the two weighted-L1 sums of folded full mode.

For a block of queries X, WX (Q, D) and a gallery block Y, WY (G, D) it computes, without
materialising any Q×G×D tensor,

    OX[q, g] = Σ_d |X[q,d] − Y[g,d]| · WX[q,d],   OY[q, g] = Σ_d |X[q,d] − Y[g,d]| · WY[g,d]

(see :mod:`vireid.scoring.fastccn` for why full mode reduces to these sums). One Triton
program owns a BLOCK_Q × BLOCK_G tile of the output and sweeps D in steps of BLOCK_D: it
loads BLOCK_Q rows of X and WX and BLOCK_G rows of Y and WY (each value is then reused by
every pair of the tile, which is what makes the kernel compute-bound instead of
memory-bound like the torch backend), forms |x − y| once per (q, g, d) and feeds it to both
weighted sums. Each BLOCK_D step is summed in float32 and added to float64 accumulators, so
rounding does not grow with D (same scheme as the numba kernel; D = 65 536 at the paper
geometry).

Runs on CUDA tensors, or on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``
set before this module is imported), which is how the tests check it without a GPU.
This module imports triton at its top: import it only through
:func:`vireid.scoring.fastccn.weighted_l1` (which does so lazily) or where triton is known
to be installed.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from vireid.errors import ConfigError

#: Tile sizes (queries, gallery items, values per step) and warps per program. Chosen for
#: register pressure (BLOCK_Q·BLOCK_G·BLOCK_D = 8192 live |x − y| values over 128 threads),
#: not tuned on a GPU yet: benchmarks/gpu_check.sh times alternatives.
DEFAULT_BLOCKS = (32, 32, 8, 4)


def interpreted() -> bool:
    """True when Triton runs its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _wl1_kernel(x_ptr, wx_ptr, y_ptr, wy_ptr, ox_ptr, oy_ptr, nq, ng, nd,
                sxq, syg, sog,
                BLOCK_Q: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr):  # pragma: no cover - compiled
    pid_q = tl.program_id(0)
    pid_g = tl.program_id(1)
    rq = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    rg = pid_g * BLOCK_G + tl.arange(0, BLOCK_G)
    rd = tl.arange(0, BLOCK_D)
    mq = rq < nq
    mg = rg < ng
    acc_x = tl.zeros((BLOCK_Q, BLOCK_G), dtype=tl.float64)
    acc_y = tl.zeros((BLOCK_Q, BLOCK_G), dtype=tl.float64)
    for d0 in range(0, nd, BLOCK_D):
        d = d0 + rd
        md = d < nd
        # Out-of-range values load as 0 with weight 0: they add nothing to either sum.
        xo = rq[:, None].to(tl.int64) * sxq + d[None, :]
        yo = rg[:, None].to(tl.int64) * syg + d[None, :]
        mx = mq[:, None] & md[None, :]
        my = mg[:, None] & md[None, :]
        x = tl.load(x_ptr + xo, mask=mx, other=0.0)
        wx = tl.load(wx_ptr + xo, mask=mx, other=0.0)
        y = tl.load(y_ptr + yo, mask=my, other=0.0)
        wy = tl.load(wy_ptr + yo, mask=my, other=0.0)
        e = tl.abs(x[:, None, :] - y[None, :, :])                    # (BQ, BG, BD)
        acc_x += tl.sum(e * wx[:, None, :], axis=2).to(tl.float64)
        acc_y += tl.sum(e * wy[None, :, :], axis=2).to(tl.float64)
    oo = rq[:, None].to(tl.int64) * sog + rg[None, :]
    mo = mq[:, None] & mg[None, :]
    tl.store(ox_ptr + oo, acc_x.to(tl.float32), mask=mo)
    tl.store(oy_ptr + oo, acc_y.to(tl.float32), mask=mo)


def weighted_l1_triton(X: Tensor, WX: Tensor, Y: Tensor, WY: Tensor,
                       blocks: tuple[int, int, int, int] = DEFAULT_BLOCKS) -> tuple[Tensor, Tensor]:
    """OX, OY (Q, G) float32 of the module docstring. X, WX: (Q, D); Y, WY: (G, D), all on
    one CUDA device (or CPU under the interpreter). ``blocks`` = (BLOCK_Q, BLOCK_G,
    BLOCK_D, num_warps), each a power of two (Triton's block shapes must be)."""
    if X.dim() != 2 or Y.dim() != 2 or X.shape[1] != Y.shape[1] or WX.shape != X.shape \
            or WY.shape != Y.shape:
        raise ConfigError(f"weighted_l1 (triton): expected X, WX (Q, D) and Y, WY (G, D), got "
                          f"{tuple(X.shape)}, {tuple(WX.shape)}, {tuple(Y.shape)}, {tuple(WY.shape)}")
    if not X.is_cuda and not interpreted():
        raise ConfigError("scoring backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 "
                          f"for Triton's CPU interpreter); got tensors on {X.device}")
    bq, bg, bd, warps = blocks
    for name, v in (("BLOCK_Q", bq), ("BLOCK_G", bg), ("BLOCK_D", bd)):
        if v < 1 or v & (v - 1):
            raise ConfigError(f"triton {name}: expected a power of two, got {v!r}")
    x, wx, y, wy = (t.detach().float().contiguous() for t in (X, WX, Y, WY))
    nq, nd = x.shape
    ng = y.shape[0]
    ox = torch.empty(nq, ng, dtype=torch.float32, device=x.device)
    oy = torch.empty_like(ox)
    if nq == 0 or ng == 0:
        return ox, oy
    grid = (triton.cdiv(nq, bq), triton.cdiv(ng, bg))
    _wl1_kernel[grid](x, wx, y, wy, ox, oy, nq, ng, nd, x.stride(0), y.stride(0), ox.stride(0),
                      BLOCK_Q=bq, BLOCK_G=bg, BLOCK_D=bd, num_warps=warps)
    return ox, oy


__all__ = ["weighted_l1_triton", "interpreted", "DEFAULT_BLOCKS"]
