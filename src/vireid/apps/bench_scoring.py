"""Speed benchmarks of full-mode scoring at the paper's geometry, with random features.

One run measures, on the same machine and under the same load:

* (a) the paper's evaluation: one CCN forward per pair, batch of one (direct form);
  also the same with FFT correlation (the paper's suggested speed-up) for comparison;
* (b) vireid's full mode (folded, exact) on an n×n query–gallery block, extrapolated to
  RegDB's 2060 × 2060, with its agreement with the direct form on sampled pairs;
* (c) this machine's throughput for what dominates (b): the fused weighted-L1 kernel on an
  in-cache working set, and fp32 matrix multiply (GFLOP/s), with the fraction (b) reaches;
* simplified scoring of 2060 × 2060 and peak memory; optionally the torch backend and a
  lower-precision variant; feature extraction and training images/s of DSCSN+CCN against a
  plain ResNet-50 ID model at the same batch size.

The JSON keys are stable and documented in docs/performance.md.
"""
from __future__ import annotations

import logging
import resource
import time
from typing import Any, Callable

import torch
import torch.nn.functional as nnf

from vireid.scoring import fastccn
from vireid.scoring.scorers import score_simplified

log = logging.getLogger(__name__)

PAPER_REGDB_FULL_S = 5280.0       # paper, RegDB 2060 × 2060 full mode, one RTX 2080Ti
PAPER_REGDB_SIMPLIFIED_S = 0.5
PAPER_REGDB_EXTRACT_S = 24.8
REGDB_N = 2060
GEOMETRY = dict(channels=2048, feat_hw=(8, 4), kernel_size=(3, 3), stride=(1, 1), padding=1)


def timeit(fn: Callable[[], Any], min_time: float = 0.0) -> tuple[float, int]:
    """Seconds per call of ``fn`` (at least one call, repeated until ``min_time``)."""
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return dt / calls, calls


def _fft_pair_logits(ccn: Any, fa: torch.Tensor, fb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Direct form of one pair with the correlations done by FFT (the paper's suggestion).

    fa, fb: (C, h, w). Same result as ``ccn.logits`` for that pair (up to FFT rounding).
    """
    p = ccn.padding
    kab = (ccn.kernels(fa[None]) - ccn.kernels(fb[None])).abs()[0]   # (n, C, hK, wK)
    hk, wk = kab.shape[-2:]
    outs = []
    for f, fc in ((fa, ccn.fc), (fb, ccn.fc if ccn.fc_b is None else ccn.fc_b)):
        fp = nnf.pad(f, (p, p, p, p))
        hp, wp = fp.shape[-2:]
        # cross-correlation: corr = irfft(F · conj(K)) with both zero-padded to the map size
        spec = torch.fft.rfft2(fp)[None] * torch.conj(torch.fft.rfft2(kab, s=(hp, wp)))
        corr = torch.fft.irfft2(spec.sum(1), s=(hp, wp))[:, : hp - hk + 1, : wp - wk + 1]
        outs.append(fc(corr.reshape(1, -1) * ccn.corr_scale)[0, 0])
    return outs[0], outs[1]


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so wall-clock times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def regdb_memory_bytes(chunk_size: int, n: int = REGDB_N, d: int = 2048 * 8 * 4) -> dict[str, int]:
    """Memory of numba full mode for an n × n problem (float32): inputs, the gallery's folded
    weights, one query chunk's weights, and the outputs (la, lb, D)."""
    f4 = 4
    return {"inputs": 2 * n * d * f4, "gallery_weights": n * d * f4,
            "query_chunk_weights": min(chunk_size, n) * d * f4, "outputs": 3 * n * n * f4}


def bench_paper_per_pair(ccn: Any, feats: torch.Tensor, pairs: int) -> dict[str, Any]:
    """(a): one CCN forward per pair, batch of one, like the paper's evaluation."""
    zero = torch.zeros(1, dtype=torch.long)
    n = feats.shape[0]
    with torch.no_grad():
        ccn(feats[0:1], feats[1:2], zero, zero)   # warm-up
        t0 = time.perf_counter()
        for k in range(pairs):
            i, j = k % n, (7 * k + 1) % n
            ccn(feats[i:i + 1], feats[j:j + 1], zero, zero)
        dt = time.perf_counter() - t0
    return {"pairs": pairs, "seconds": dt, "pairs_per_s": pairs / dt,
            "regdb_extrapolated_s": REGDB_N ** 2 / (pairs / dt)}


def bench_fft_per_pair(ccn: Any, feats: torch.Tensor, pairs: int) -> dict[str, Any]:
    """(a) with FFT correlation; also its largest deviation from the conv2d direct form."""
    zero = torch.zeros(1, dtype=torch.long)
    n = feats.shape[0]
    with torch.no_grad():
        _fft_pair_logits(ccn, feats[0], feats[1])
        t0 = time.perf_counter()
        err = 0.0
        for k in range(pairs):
            i, j = k % n, (7 * k + 1) % n
            la, lb = _fft_pair_logits(ccn, feats[i], feats[j])
            if k < 3:
                ra, rb = ccn.logits(feats[i:i + 1], feats[j:j + 1], zero, zero)
                err = max(err, float((la - ra[0]).abs()), float((lb - rb[0]).abs()))
        dt = time.perf_counter() - t0
    return {"pairs": pairs, "seconds": dt, "pairs_per_s": pairs / dt, "max_abs_logit_error": err}


def bench_full(ccn: Any, qF: torch.Tensor, gF: torch.Tensor, chunk_size: int,
               backend: str = "numba", check_pairs: int = 32) -> dict[str, Any]:
    """(b): folded full mode on qF × gF, timed end to end (per-image terms included)."""
    rss0 = _peak_rss_mib()
    sync(qF.device)
    t0 = time.perf_counter()
    D = fastccn.score_full(ccn, qF, gF, query_side="b", chunk_size=chunk_size, backend=backend)
    sync(qF.device)
    dt = time.perf_counter() - t0
    rss_scoring = _peak_rss_mib()
    D = D.cpu()
    nq, ng = D.shape
    # Exactness spot check against the direct form (CCN.forward) on sampled pairs (only the
    # sampled images go through the direct form: it crops kernels of every image it gets).
    g = torch.Generator().manual_seed(0)
    qi = torch.randint(nq, (check_pairs,), generator=g)
    gi = torch.randint(ng, (check_pairs,), generator=g)
    ar = torch.arange(check_pairs)
    with torch.no_grad():
        # side a = gallery, side b = queries; the direct form runs on the CCN's device
        dev = next(ccn.parameters()).device
        ref = ccn(gF[gi.to(gF.device)].to(dev), qF[qi.to(qF.device)].to(dev),
                  ar.to(dev), ar.to(dev)).cpu()
    rel = float(((D[qi, gi] - ref).abs() / ref.abs()).max())
    pairs_per_s = nq * ng / dt
    d = fastccn.macs_per_pair(ccn) // 2
    return {"backend": fastccn.resolve_backend(backend, qF), "device": str(qF.device),
            "queries": nq, "gallery": ng, "chunk_size": chunk_size,
            "seconds": dt, "pairs_per_s": pairs_per_s, "values_per_pair": d,
            "pair_values_per_s": pairs_per_s * d,
            "regdb_extrapolated_s": REGDB_N ** 2 / pairs_per_s,
            "max_rel_error_vs_direct": rel, "checked_pairs": check_pairs,
            "peak_rss_mib": rss_scoring, "peak_rss_growth_mib": rss_scoring - rss0}


def bench_lower_precision(qX: torch.Tensor, gX: torch.Tensor, dtype: torch.dtype) -> dict[str, Any]:
    """Torch weighted-L1 in ``dtype`` vs float32 on random operands: time and error."""
    w_q, w_g = torch.randn_like(qX), torch.randn_like(gX)
    t0 = time.perf_counter()
    ref = fastccn.weighted_l1_torch(qX, w_q, gX, w_g)
    t32 = time.perf_counter() - t0
    lo = [t.to(dtype) for t in (qX, w_q, gX, w_g)]
    t0 = time.perf_counter()
    ox, oy = _weighted_l1_lowp(*lo)
    tl = time.perf_counter() - t0
    err = max(float(((ox.float() - ref[0]).abs() / ref[0].abs().clamp_min(1e-3)).median()),
              float(((oy.float() - ref[1]).abs() / ref[1].abs().clamp_min(1e-3)).median()))
    return {"dtype": str(dtype).replace("torch.", ""), "pairs": qX.shape[0] * gX.shape[0],
            "seconds": tl, "seconds_float32": t32, "median_rel_error": err}


def _weighted_l1_lowp(X: torch.Tensor, WX: torch.Tensor, Y: torch.Tensor,
                      WY: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Same chunked algorithm as the torch backend but without upcasting (products and sums
    # in the low precision, as a GPU half-precision path would do).
    diff = (X[:, None, :] - Y[None]).abs()
    return torch.bmm(diff, WX[:, :, None])[..., 0], (diff * WY[None]).sum(-1)


def bench_machine(dim: int = 2048, min_time: float = 1.0) -> dict[str, Any]:
    """(c): fp32 matmul GFLOP/s and the in-cache rate of the fused weighted-L1 kernel."""
    a, b = torch.randn(dim, dim), torch.randn(dim, dim)
    a @ b
    per, _ = timeit(lambda: a @ b, min_time)
    out: dict[str, Any] = {"matmul_dim": dim, "matmul_gflops": 2 * dim ** 3 / per / 1e9}
    if fastccn.numba_available():
        import numpy as np

        kern = _incache_kernel()
        rows = np.random.default_rng(0).random((8, 1024), dtype=np.float32)
        reps = 200_000  # ~0.1 s per call: the parallel launch (ms under load) is negligible
        kern(rows, 1)
        per, _ = timeit(lambda: kern(rows, reps), min_time)
        out["incache_weighted_l1_pair_values_per_s"] = 2 * reps * 4 * rows.shape[1] / per
    return out


_INCACHE: Any = None


def _incache_kernel() -> Any:
    """The inner loop of the numba kernel (2×2 register tile, both directions) on 8 rows of
    1024 floats (32 KiB, L1-resident), repeated, on 2 threads: the kernel's compute ceiling."""
    global _INCACHE
    if _INCACHE is None:
        import numba
        import numpy as np

        fm = {"reassoc", "contract"}

        @numba.njit(fastmath=fm, boundscheck=False, cache=True)
        def tile(x0, x1, wx0, wx1, y0, y1, wy0, wy1):  # pragma: no cover - compiled
            a00 = a01 = a10 = a11 = b00 = b01 = b10 = b11 = np.float32(0.0)
            for d in range(x0.shape[0]):
                e = abs(x0[d] - y0[d])
                a00 += e * wx0[d]
                b00 += e * wy0[d]
                e = abs(x0[d] - y1[d])
                a01 += e * wx0[d]
                b01 += e * wy1[d]
                e = abs(x1[d] - y0[d])
                a10 += e * wx1[d]
                b10 += e * wy0[d]
                e = abs(x1[d] - y1[d])
                a11 += e * wx1[d]
                b11 += e * wy1[d]
            return a00 + a01 + a10 + a11 + b00 + b01 + b10 + b11

        @numba.njit(parallel=True, boundscheck=False, cache=True)
        def incache(R, reps):  # pragma: no cover - compiled
            out = np.zeros(2)
            for t in numba.prange(2):
                s = 0.0
                for _ in range(reps):
                    s += tile(R[0], R[1], R[2], R[3], R[4], R[5], R[6], R[7])
                out[t] = s
            return out

        _INCACHE = incache
    return _INCACHE


def bench_simplified(n: int = REGDB_N, c: int = 2048) -> dict[str, Any]:
    qG, gG = torch.rand(n, c), torch.rand(n, c)
    t0 = time.perf_counter()
    S = -score_simplified(qG, gG)
    return {"queries": n, "gallery": n, "seconds": time.perf_counter() - t0, "shape": list(S.shape)}
