"""Speed benchmark of full-mode scoring at the paper's geometry (issue 6), with random features.

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
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as nnf

from vireid.apps.index import discover_images, embed_images, load_checkpoint_model
from vireid.config import Config
from vireid.errors import ConfigError
from vireid.evaluation.metrics import eval_regdb
from vireid.models.build import build_model
from vireid.models.ccn import CCN
from vireid.models.resnet import resnet
from vireid.scoring import fastccn
from vireid.scoring.scorers import full_pair_fn, score_rerank, score_simplified

log = logging.getLogger(__name__)

PAPER_REGDB_FULL_S = 5280.0       # paper, RegDB 2060 × 2060 full mode, one RTX 2080Ti
PAPER_REGDB_SIMPLIFIED_S = 0.5
PAPER_REGDB_EXTRACT_S = 24.8
REGDB_N = 2060
GEOMETRY = dict(channels=2048, feat_hw=(8, 4), kernel_size=(3, 3), stride=(1, 1), padding=1)


def _timeit(fn: Callable[[], Any], min_time: float = 0.0) -> tuple[float, int]:
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


def _sync(device: torch.device) -> None:
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
    _sync(qF.device)
    t0 = time.perf_counter()
    D = fastccn.score_full(ccn, qF, gF, query_side="b", chunk_size=chunk_size, backend=backend)
    _sync(qF.device)
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
    ref = fastccn._weighted_l1_torch(qX, w_q, gX, w_g)
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
    per, _ = _timeit(lambda: a @ b, min_time)
    out: dict[str, Any] = {"matmul_dim": dim, "matmul_gflops": 2 * dim ** 3 / per / 1e9}
    if fastccn.numba_available():
        import numpy as np

        kern = _incache_kernel()
        rows = np.random.default_rng(0).random((8, 1024), dtype=np.float32)
        reps = 200_000  # ~0.1 s per call: the parallel launch (ms under load) is negligible
        kern(rows, 1)
        per, _ = _timeit(lambda: kern(rows, reps), min_time)
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


def bench_models(batch: int, steps: int = 2) -> dict[str, Any]:
    """Feature extraction images/s (DSCSN, eval mode) and training images/s (one SGD step on
    ``batch`` RGB + ``batch`` IR images, PBCE + 0.1·ID) of DSCSN+CCN, against a plain
    ResNet-50 with an ID head (one path, ID loss only) on the same 2·batch images.
    Random weights; 256×128 inputs."""

    cfg = Config()
    h, w = cfg.data.height, cfg.data.width
    classes = 395
    model = build_model(cfg, classes, load_pretrained=False)
    plain = resnet(50, last_stride=cfg.model.last_stride, num_classes=classes)
    x_rgb, x_ir = torch.randn(batch, 3, h, w), torch.randn(batch, 3, h, w)
    labels = torch.arange(batch) % classes
    out: dict[str, Any] = {"batch_per_modality": batch, "input_hw": [h, w]}

    model.eval()
    with torch.no_grad():
        model.forward_features(x_rgb, "rgb")
        per, _ = _timeit(lambda: model.forward_features(x_rgb, "rgb"))
    out["extract_images_per_s"] = batch / per
    out["regdb_extract_extrapolated_s"] = 2 * REGDB_N / out["extract_images_per_s"]

    def step_dscsn(opt: torch.optim.Optimizer) -> None:
        f_r, g_r, f_i, g_i = model.forward_pair(x_rgb, x_ir)
        ia = torch.arange(batch).repeat(4)                           # N positives + 3N negatives
        ib = torch.cat([torch.arange(batch)] + [torch.roll(torch.arange(batch), s) for s in (1, 2, 3)])
        d = model.ccn(f_r, f_i, ia, ib).clamp(1e-6, 1 - 1e-6)
        lab = (ia != ib).float()
        loss = nnf.binary_cross_entropy(d, lab) + 0.1 * nnf.cross_entropy(
            model.classify(torch.cat([g_r, g_i])), torch.cat([labels, labels]))
        opt.zero_grad()
        loss.backward()
        opt.step()

    def step_plain(opt: torch.optim.Optimizer) -> None:
        loss = nnf.cross_entropy(plain(torch.cat([x_rgb, x_ir])), torch.cat([labels, labels]))
        opt.zero_grad()
        loss.backward()
        opt.step()

    for name, net, step in (("dscsn_ccn", model, step_dscsn), ("resnet50_id", plain, step_plain)):
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        step(opt)  # warm-up
        t0 = time.perf_counter()
        for _ in range(steps):
            step(opt)
        out[f"train_images_per_s_{name}"] = steps * 2 * batch / (time.perf_counter() - t0)
    out["train_speed_ratio_dscsn_ccn_vs_resnet50"] = (out["train_images_per_s_dscsn_ccn"]
                                                      / out["train_images_per_s_resnet50_id"])
    return out


def run_benchmark(n_full: int = 512, paper_pairs: int = 200, fft_pairs: int = 20,
                  chunk_size: int = 256, torch_n: int = 128, lowp_n: int = 32,
                  model_batch: int = 4, with_models: bool = True, seed: int = 0,
                  e2e_images: int = 0, e2e_batch: int = 16,
                  density_checkpoint: Optional[str] = None, density_images: Optional[str] = None,
                  progress: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Run every measurement once and return the JSON-ready result (keys in
    docs/performance.md). ``n_full`` = REGDB_N runs RegDB's size in full instead of
    extrapolating; 0 for a sub-measurement skips it. ``e2e_images`` > 0 adds the end-to-end
    evaluation (2·REGDB_N = RegDB in full); ``density_checkpoint`` with ``density_images``
    adds the measured density of a trained model's F.

    Raises:
        ConfigError: an option out of range (message names it, its range and the value).
    """

    for name, val, lo in (("n", n_full, 1), ("paper_pairs", paper_pairs, 1),
                          ("fft_pairs", fft_pairs, 0), ("chunk_size", chunk_size, 1),
                          ("torch_n", torch_n, 0), ("lowp_n", lowp_n, 0),
                          ("model_batch", model_batch, 1), ("e2e_images", e2e_images, 0),
                          ("e2e_batch", e2e_batch, 1)):
        if not isinstance(val, int) or val < lo:
            raise ConfigError(f"bench --{name.replace('_', '-')}: expected an integer >= {lo}, got {val!r}")
    if e2e_images == 1:
        raise ConfigError("bench --e2e-images: expected 0 (skip) or at least 2 (queries and gallery), got 1")
    if (density_checkpoint is None) != (density_images is None):
        raise ConfigError("bench density: expected both a checkpoint and an image folder, got only "
                          + ("the checkpoint" if density_images is None else "the image folder"))

    say = progress or (lambda s: log.info("%s", s))
    torch.manual_seed(seed)
    ccn = CCN(**GEOMETRY).eval()
    c, (h, w) = GEOMETRY["channels"], GEOMETRY["feat_hw"]
    # Non-negative maps, like the ReLU output of ResNet stage 4.
    feats = torch.rand(max(n_full, 16) * 2, c, h, w)
    qF, gF = feats[:n_full], feats[n_full:2 * n_full]
    res: dict[str, Any] = {
        "schema": "vireid-bench-ccn/1",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.is_available(), "loadavg_start": list(os.getloadavg()),
                    "numba": fastccn.numba_available()},
        "geometry": {k: list(v) if isinstance(v, tuple) else v for k, v in GEOMETRY.items()}
        | {"num_kernels": ccn.num_kernels,
           "direct_macs_per_pair": ccn.macs_per_pair(),
           "folded_macs_per_pair": fastccn.macs_per_pair(ccn)},
        "paper": {"regdb_full_s": PAPER_REGDB_FULL_S, "regdb_simplified_s": PAPER_REGDB_SIMPLIFIED_S,
                  "regdb_extract_s": PAPER_REGDB_EXTRACT_S, "gpu": "RTX 2080Ti"},
    }
    fastccn.warmup()
    say("(c) machine throughput")
    res["machine_throughput"] = bench_machine()
    say(f"(a) paper per-pair evaluation, {paper_pairs} pairs")
    # Tiny per-pair ops suffer from thread hand-offs: time with the default thread count and
    # with one thread, and keep the faster as the baseline (the conservative speed-up).
    threads = torch.get_num_threads()
    runs = [bench_paper_per_pair(ccn, feats, paper_pairs)]
    torch.set_num_threads(1)
    try:
        runs.append(bench_paper_per_pair(ccn, feats, paper_pairs))
    finally:
        torch.set_num_threads(threads)
    runs[0]["torch_threads"], runs[1]["torch_threads"] = threads, 1
    res["paper_per_pair"] = max(runs, key=lambda r: r["pairs_per_s"]) | {"runs": runs}
    if fft_pairs:
        say(f"(a') FFT correlation per pair, {fft_pairs} pairs")
        res["paper_per_pair_fft"] = bench_fft_per_pair(ccn, feats, fft_pairs)
    backend = "numba" if fastccn.numba_available() else "torch"
    say(f"(b) full mode {n_full}x{n_full} ({backend})")
    res["full"] = bench_full(ccn, qF, gF, chunk_size, backend=backend)
    if torch_n:
        say(f"(b') torch backend {torch_n}x{torch_n}")
        res["full_torch"] = bench_full(ccn, qF[:torch_n], gF[:torch_n], chunk_size, backend="torch")
    if lowp_n:
        say(f"lower precision {lowp_n}x{lowp_n}")
        x = feats[:2 * lowp_n].reshape(2 * lowp_n, -1)
        res["lower_precision"] = [bench_lower_precision(x[:lowp_n], x[lowp_n:], dt)
                                  for dt in (torch.bfloat16, torch.float16)]
    say("simplified 2060x2060")
    res["simplified"] = bench_simplified()
    full, paper = res["full"], res["paper_per_pair"]
    mt = res["machine_throughput"]
    summary = {
        "paper_pairs_per_s": paper["pairs_per_s"],
        "full_pairs_per_s": full["pairs_per_s"],
        "speedup_full_vs_paper_per_pair": full["pairs_per_s"] / paper["pairs_per_s"],
        "regdb_full_extrapolated_s": full["regdb_extrapolated_s"],
        "regdb_full_paper_s": PAPER_REGDB_FULL_S,
        "regdb_simplified_s": res["simplified"]["seconds"],
        "fraction_of_incache_kernel": (full["pair_values_per_s"]
                                       / mt["incache_weighted_l1_pair_values_per_s"]
                                       if "incache_weighted_l1_pair_values_per_s" in mt else None),
        # one pair value = 2 multiply-adds (+ |x − y|): 4 flops, compared to matmul flops
        "fraction_of_matmul_flops": 4 * full["pair_values_per_s"] / (mt["matmul_gflops"] * 1e9),
        "regdb_memory_bytes": regdb_memory_bytes(chunk_size),
    }
    res["summary"] = summary
    if with_models:
        say(f"models: extraction and training, batch {model_batch} per modality")
        try:
            res["models"] = bench_models(model_batch)
        except Exception as exc:  # the benchmark still reports the scoring figures
            log.warning("model benchmark failed: %s", exc)
            res["models"] = {"error": f"{type(exc).__name__}: {exc}"}
    res["feature_density"] = {"bench_random_features": fastccn.density(qF, gF)}
    if density_checkpoint is not None:
        say(f"density of F of the trained model {density_checkpoint}")
        res["feature_density"]["trained"] = feature_density(density_checkpoint, str(density_images))
    if e2e_images:
        say(f"end-to-end evaluation, {e2e_images} images")
        res["end_to_end"] = bench_end_to_end(e2e_images, batch=e2e_batch)
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    return res


# --------------------------------------------------------------------------------------
# Issue 17: feature density, end-to-end evaluation, device-aware model timings.

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def feature_density(checkpoint: str, image_root: str, max_images: int = 200) -> dict[str, Any]:
    """Fraction of non-zero values of F (the last ReLU's output) of a trained checkpoint on
    up to ``max_images`` images per modality under ``image_root`` (SYSU layout: cam1/2/4/5
    RGB, cam3/6 IR; other folders count as RGB). Without and with flip averaging."""


    model, cfg, ident = load_checkpoint_model(checkpoint)
    paths = discover_images(image_root)
    ir = [p for p in paths if any(part in ("cam3", "cam6") for part in Path(p).parts)]
    rgb = [p for p in paths if p not in set(ir)]
    out: dict[str, Any] = {"checkpoint": ident.checkpoint, "epoch": ident.epoch,
                           "arch": cfg.model.arch, "width": cfg.model.width}
    for name, ps in (("rgb", rgb[:max_images]), ("ir", ir[:max_images])):
        if not ps:
            continue
        for flip in (False, True):
            F, _ = embed_images(model, cfg, ps, name, flip=flip)
            out[f"{name}{'_flip' if flip else ''}"] = {"images": len(ps),
                                                         "density": float((F != 0).mean()),
                                                         "negative_values": int((F < 0).sum())}
    return out


def bench_end_to_end(n_images: int = 2 * REGDB_N, batch: int = 32, topk: int = 20,
                     device: str = "cpu", backend: str = "auto", seed: int = 0) -> dict[str, Any]:
    """A whole RegDB-sized evaluation with the paper model (random weights, random images):
    extraction of ``n_images`` 256×128 images (half IR queries, half RGB gallery), then
    simplified, full and rerank (top-``topk``) scoring, each followed by the RegDB metric.
    Images are random tensors (no decoding), 10 per identity as in RegDB."""

    cfg = Config()
    h, w = cfg.data.height, cfg.data.width
    nq = n_images // 2
    ng = n_images - nq
    dev = torch.device(device)
    torch.manual_seed(seed)
    model = build_model(cfg, 206, load_pretrained=False).to(dev).eval()
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"images": n_images, "queries": nq, "gallery": ng, "batch": batch,
                           "input_hw": [h, w], "device": str(dev), "topk": topk,
                           "paper_s": {"extract": PAPER_REGDB_EXTRACT_S,
                                       "simplified": PAPER_REGDB_SIMPLIFIED_S,
                                       "full": PAPER_REGDB_FULL_S}}

    def extract(n: int, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        fs, gs = [], []
        with torch.no_grad():
            for s in range(0, n, batch):
                x = torch.rand(min(batch, n - s), 3, h, w, generator=gen).to(dev)
                f, g = model.forward_features(x, modality)
                fs.append(f)
                gs.append(g)
        return torch.cat(fs), torch.cat(gs)

    _sync(dev)
    t0 = time.perf_counter()
    qF, qG = extract(nq, "ir")
    gF, gG = extract(ng, "rgb")
    _sync(dev)
    out["extract_s"] = time.perf_counter() - t0
    out["extract_images_per_s"] = n_images / out["extract_s"]
    out["feature_density_random_weights"] = fastccn.density(qF, gF)
    q_pids = (torch.arange(nq) // 10).numpy()
    g_pids = (torch.arange(ng) // 10).numpy()

    def timed(name: str, fn: Callable[[], torch.Tensor]) -> None:
        _sync(dev)
        t = time.perf_counter()
        dist = fn()
        _sync(dev)
        out[f"{name}_s"] = time.perf_counter() - t
        t = time.perf_counter()
        cmc, mAP, _ = eval_regdb(dist.cpu().numpy(), q_pids, g_pids)
        out[f"{name}_metric_s"] = time.perf_counter() - t
        out[f"{name}_rank1"] = float(cmc[0])

    timed("simplified", lambda: -score_simplified(qG, gG))
    timed("full", lambda: fastccn.score_full(model.ccn, qF, gF, backend=backend))  # type: ignore[arg-type]
    timed("rerank", lambda: score_rerank(score_simplified(qG, gG),
                                         full_pair_fn(model.ccn, qF, gF, "b", backend), topk))
    out["full_backend"] = fastccn.resolve_backend(backend, qF)
    out["total_s"] = sum(out[k] for k in ("extract_s", "simplified_s", "simplified_metric_s",
                                            "full_s", "full_metric_s", "rerank_s", "rerank_metric_s"))
    if dev.type == "cuda":
        out["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(dev)
    return out


def bench_train_step(batch: int = 32, steps: int = 5, device: str = "cpu", amp: str = "off",
                     warmup: int = 2) -> dict[str, Any]:
    """Training images/s of the paper model (DSCSN + CCN, ResNet-50, 256×128, random weights):
    forward + backward + SGD step on ``batch`` RGB + ``batch`` IR images with N positive and
    3N negative pairs, PBCE + 0.1·ID. ``amp``: off | bf16 | fp16 (torch.autocast; fp16 with a
    GradScaler), applied here directly, independent of the trainer."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp: expected one of {', '.join(AMP_DTYPES)}, got {amp!r}")

    dev = torch.device(device)
    cfg = Config()
    h, w = cfg.data.height, cfg.data.width
    classes = 395
    model = build_model(cfg, classes, load_pretrained=False).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x_rgb, x_ir = torch.randn(batch, 3, h, w, device=dev), torch.randn(batch, 3, h, w, device=dev)
    labels = torch.arange(batch, device=dev) % classes
    ia = torch.arange(batch, device=dev).repeat(4)
    ib = torch.cat([torch.arange(batch, device=dev)]
                   + [torch.roll(torch.arange(batch, device=dev), s) for s in (1, 2, 3)])
    lab = (ia != ib).float()
    dtype = AMP_DTYPES[amp]
    scaler = torch.amp.GradScaler(dev.type, enabled=(amp == "fp16"))

    def step() -> float:
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            f_r, g_r, f_i, g_i = model.forward_pair(x_rgb, x_ir)
            d = model.ccn(f_r, f_i, ia, ib)
            logits = model.classify(torch.cat([g_r, g_i]))
        # The losses in float32 (BCE on probabilities is unsafe under autocast).
        loss = nnf.binary_cross_entropy(d.float().clamp(1e-6, 1 - 1e-6), lab) + 0.1 * nnf.cross_entropy(
            logits.float(), torch.cat([labels, labels]))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())

    for _ in range(warmup):
        step()
    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    losses = [step() for _ in range(steps)]
    _sync(dev)
    dt = time.perf_counter() - t0
    out = {"device": str(dev), "amp": amp, "batch_per_modality": batch, "steps": steps,
           "seconds": dt, "train_images_per_s": steps * 2 * batch / dt,
           "losses_finite": all(map(lambda v: v == v and abs(v) != float("inf"), losses))}
    if dev.type == "cuda":
        out["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(dev)
    return out


def bench_extract(batch: int = 128, steps: int = 5, device: str = "cpu") -> dict[str, Any]:
    """Feature extraction images/s of the paper model (eval mode, random weights, 256×128)."""

    dev = torch.device(device)
    cfg = Config()
    model = build_model(cfg, 395, load_pretrained=False).to(dev).eval()
    x = torch.randn(batch, 3, cfg.data.height, cfg.data.width, device=dev)
    with torch.no_grad():
        model.forward_features(x, "rgb")
        _sync(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            model.forward_features(x, "rgb")
        _sync(dev)
        dt = time.perf_counter() - t0
    out = {"device": str(dev), "batch": batch, "steps": steps, "seconds": dt,
           "extract_images_per_s": steps * batch / dt,
           "regdb_extract_extrapolated_s": 2 * REGDB_N * dt / (steps * batch)}
    if dev.type == "cuda":
        out["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(dev)
    return out


def bench_full_device(n: int = REGDB_N, device: str = "cpu", backend: str = "auto",
                      chunk_size: int = 256, density: Optional[float] = None,
                      seed: int = 0) -> dict[str, Any]:
    """Full mode on n × n random non-negative maps at the paper geometry on ``device`` with
    ``backend``, checked against the direct form on sampled pairs. ``density``: fraction of
    non-zeros (None: uniform maps, no zeros)."""

    dev = torch.device(device)
    torch.manual_seed(seed)
    ccn = CCN(**GEOMETRY).eval()
    c, (h, w) = GEOMETRY["channels"], GEOMETRY["feat_hw"]
    feats = torch.rand(2 * n, c, h, w)
    if density is not None:
        feats = torch.where(torch.rand(feats.shape) < density, feats, 0.0)
    feats = feats.to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    res = bench_full(ccn, feats[:n], feats[n:], chunk_size, backend=backend)
    res["feature_density"] = fastccn.density(feats)
    if dev.type == "cuda":
        res["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(dev)
    return res
