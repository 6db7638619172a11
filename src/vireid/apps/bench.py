"""``vireid bench``: one run of every benchmark, as one JSON document.

It measures, on the same machine and under the same load, full-mode scoring against the
paper's per-pair form (:mod:`vireid.apps.bench_scoring`) and, on request, the models
(:mod:`vireid.apps.bench_models`): extraction and training images/s, a whole RegDB-sized
evaluation, and the density of a trained model's features. The JSON keys are stable and
documented in docs/performance.md.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Optional

import torch

from vireid.apps.bench_models import bench_end_to_end, bench_models, feature_density
from vireid.apps.bench_scoring import (GEOMETRY, PAPER_REGDB_EXTRACT_S, PAPER_REGDB_FULL_S,
                                       PAPER_REGDB_SIMPLIFIED_S, bench_fft_per_pair, bench_full,
                                       bench_lower_precision, bench_machine,
                                       bench_paper_per_pair, bench_simplified,
                                       regdb_memory_bytes)
from vireid.errors import ConfigError
from vireid.models.ccn import CCN
from vireid.scoring import fastccn
from vireid.utils.provenance import machine_info

log = logging.getLogger(__name__)


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
        "machine": machine_info("platform", "processor", "cpu_count", "torch_threads",
                                "cuda=cuda_available", "loadavg_start=loadavg")
        | {"numba": fastccn.numba_available()},
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
    res["machine"].update(machine_info("loadavg_end=loadavg"))
    return res
