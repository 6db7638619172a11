"""Time vireid's vectorised eval_sysu / eval_regdb against a per-query loop in the reference's style.

Usage:
    python benchmarks/bench_metrics.py [--queries 3803] [--gallery 3000] [--ref-queries 400]
                                       [--repeats 3] [--json out.json]

The loop (written here, in the style of the AGW baseline's eval_sysu: one Python iteration per
query with np.unique, cumsum and a list comprehension for AP) is timed on the first
``--ref-queries`` queries and extrapolated linearly to all of them; on those queries the two
implementations are also checked for identical results.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

from vireid.evaluation.metrics import eval_regdb, eval_sysu


def loop_eval_sysu(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20):
    """Per-query loop with the reference's semantics (assumes equal curve lengths)."""
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1)
    ranked = g_pids[indices]
    curves, aps, inps, n_valid = [], [], [], 0.0
    for i in range(num_q):
        order = indices[i]
        keep = ~((q_camids[i] == 3) & (g_camids[order] == 2))
        kept = ranked[i][keep]
        first_idx = np.unique(kept, return_index=True)[1]
        distinct = np.array([kept[j] for j in sorted(first_idx)])
        curves.append((distinct == q_pids[i]).astype(np.int32).cumsum()[:max_rank])
        m = (kept == q_pids[i]).astype(np.int32)
        if not m.any():
            continue
        c = m.cumsum()
        last = np.max(np.where(m == 1))
        inps.append(c[last] / (last + 1.0))
        n_valid += 1
        prec = np.asarray([x / (k + 1.0) for k, x in enumerate(c)]) * m
        aps.append(prec.sum() / m.sum())
    cmc = np.asarray(curves).astype(np.float32).sum(0) / n_valid
    return cmc, np.mean(aps), np.mean(inps)


def _case(num_q, num_g, num_ids, seed=0):
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(0, num_ids, num_q)
    g_pids = np.repeat(np.arange(num_ids), -(-num_g // num_ids))[:num_g]
    q_cams = rng.choice([3, 6], num_q)
    g_cams = rng.choice([1, 2, 4, 5], num_g)
    # Features with an identity component, so the ranking looks like a real model's.
    centers = rng.standard_normal((num_ids, 64))
    qf = centers[q_pids] + 2.0 * rng.standard_normal((num_q, 64))
    gf = centers[g_pids] + 2.0 * rng.standard_normal((num_g, 64))
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    dist = -(qf @ gf.T).astype(np.float32)
    return dist, q_pids, g_pids, q_cams, g_cams


def _best(fn, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=3803)
    ap.add_argument("--gallery", type=int, default=3000)
    ap.add_argument("--ids", type=int, default=96)
    ap.add_argument("--ref-queries", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()

    dist, q_pids, g_pids, q_cams, g_cams = _case(args.queries, args.gallery, args.ids)
    t_fast, (cmc, m_ap, m_inp) = _best(lambda: eval_sysu(dist, q_pids, g_pids, q_cams, g_cams), args.repeats)
    t_argsort, _ = _best(lambda: np.argsort(dist, axis=1), args.repeats)

    n_ref = min(args.ref_queries, args.queries)
    sub = (dist[:n_ref], q_pids[:n_ref], g_pids, q_cams[:n_ref], g_cams)
    t_ref_sub, ref = _best(lambda: loop_eval_sysu(*sub), 1)
    fast_sub = eval_sysu(*sub)
    identical = bool(np.array_equal(fast_sub[0], ref[0]) and fast_sub[1] == ref[1] and fast_sub[2] == ref[2])

    rq = min(2060, args.queries)
    rg = min(2060, args.gallery)
    t_regdb, _ = _best(lambda: eval_regdb(dist[:rq, :rg], q_pids[:rq], g_pids[:rg]), args.repeats)

    res = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "numpy": np.__version__},
        "shape": [args.queries, args.gallery],
        "eval_sysu_s": t_fast,
        "argsort_only_s": t_argsort,
        "reference_loop_s_measured": t_ref_sub,
        "reference_loop_queries": n_ref,
        "reference_loop_s_extrapolated": t_ref_sub * args.queries / n_ref,
        "speedup": t_ref_sub * args.queries / n_ref / t_fast,
        "identical_on_subset": identical,
        "eval_regdb_2060x2060_s": t_regdb,
        "rank1": float(cmc[0]),
        "mAP": m_ap,
        "mINP": m_inp,
    }
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        d = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, args.json)
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
