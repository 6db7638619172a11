"""How search / scoring cost grows with the gallery size, for each scoring mode.

Random features (non-negative, like post-ReLU maps) at two geometries:

* ``paper``: ResNet-50, 256×128 input, last stride 2 → F = 2048 × 8 × 4 (256 KiB per image)
* ``cpu``:   the cpu-synthetic preset (ResNet-18 ×0.25, 128×64, last stride 1) → F = 128 × 8 × 4

and a randomly initialised CCN of that geometry (3×3 kernels, stride 1, padding 1; the cost
does not depend on the weights). For each gallery size N it times, for Q queries:

* ``simplified-torch`` / ``simplified-faiss``: cosine top-k (the simplified mode's ``topk``,
  :func:`vireid.scoring.topk.cosine_topk`)
* ``full``: D_RI of all Q × N pairs (vireid.scoring.fastccn/scoring ``score_full``)
* ``rerank``: simplified top-K then D_RI of the Q × K candidates (the rerank mode's ``topk``)

Under ``torchrun --nproc_per_node=R`` it times the sharded full mode instead
(``score_sharded``, query rows split across ranks); rank 0 writes the JSON.

Usage::

    python benchmarks/bench_scaling.py --json bench-scaling.json
    python benchmarks/bench_scaling.py --quick              # small sizes, seconds
    torchrun --nproc_per_node=2 benchmarks/bench_scaling.py --sharded-only --json sharded.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any, Callable

import numpy as np
import torch

from vireid.utils import distributed as D
from vireid.scoring import fastccn
from vireid.scoring.inputs import Features
from vireid.scoring.scorers import SCORING_MODES, full_pair_fn, score_full
from vireid.scoring.sharded import score_sharded
from vireid.scoring.topk import faiss_available
from vireid.models.ccn import CCN
from vireid.apps.search import ArrayGallery

GEOMETRIES = {"paper": (2048, 8, 4), "cpu": (128, 8, 4)}


def features(n: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """(n, C, h, w) float32, |N(0, 1)|, generated in blocks to bound temporary memory."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, *shape), dtype=np.float32)
    for s in range(0, n, 1024):
        blk = rng.standard_normal((min(1024, n - s), *shape), dtype=np.float32)
        out[s:s + len(blk)] = np.abs(blk)
    return out


class PooledGallery(ArrayGallery):
    """A gallery of ``n`` rows whose feature maps repeat a smaller pool (row r has the F of
    pool row r mod pool size): the rerank cost is the same, the memory is not 26 GB."""

    def __init__(self, pool_F: np.ndarray, G: np.ndarray) -> None:
        super().__init__(pool_F, G, [""] * len(G))

    def take_F(self, rows):  # type: ignore[override]
        return np.asarray(self.F[np.asarray(rows, dtype=np.int64) % len(self.F)])


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def record(geom: str, mode: str, q: int, n: int, seconds: float, pairs: int | None = None,
           **extra: Any) -> dict[str, Any]:
    r = {"geometry": geom, "mode": mode, "queries": q, "gallery": n, "seconds": round(seconds, 5),
         "ms_per_query": round(1000 * seconds / q, 4)}
    if pairs:
        r["ccn_pairs"] = pairs
        r["us_per_pair"] = round(1e6 * seconds / pairs, 4)
    r.update(extra)
    return r


def run_single(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    fastccn.warmup()
    for geom in args.geometries:
        shape = GEOMETRIES[geom]
        torch.manual_seed(0)
        ccn = CCN(shape[0], shape[1:]).eval()
        sizes_s = args.simplified_sizes[geom]
        sizes_f = args.full_sizes[geom]
        gF_all = features(max(sizes_f), shape, 1)
        # Simplified search needs only G; G of the largest galleries is drawn directly.
        gG_all = np.abs(np.random.default_rng(3).standard_normal((max(sizes_s), shape[0]),
                                                                  dtype=np.float32))
        qF = features(args.queries, shape, 2)
        qG = qF.mean(axis=(2, 3))
        simplified, rerank_mode = SCORING_MODES["simplified"], SCORING_MODES["rerank"]
        q_all = Features(torch.from_numpy(qF), torch.from_numpy(qG))
        for n in sizes_s:
            gG = gG_all[:n]
            for backend in ("torch", "faiss") if faiss_available() else ("torch",):
                for nq in (1, args.queries):
                    # A fresh gallery object: the first search also normalises G (and fills
                    # the FAISS index); later searches reuse that ("warm", the serving case).
                    fresh = PooledGallery(gF_all, gG)
                    q_nq = Features(G=torch.from_numpy(qG[:nq]))
                    t0 = time.perf_counter()
                    simplified.topk(q_nq, fresh, args.topk, search_backend=backend)
                    cold = time.perf_counter() - t0
                    t = best_time(lambda: simplified.topk(q_nq, fresh, args.topk,
                                                          search_backend=backend), args.repeats)
                    out.append(record(geom, f"simplified-{backend}", nq, n, t, topk=args.topk,
                                      first_search_seconds=round(cold, 5)))
                    print(out[-1], flush=True)
            gal = PooledGallery(gF_all, gG)
            simplified.topk(q_all, gal, 1)  # warm the cache
            _, cand = simplified.topk(q_all, gal, args.rerank_k, search_backend="torch")
            # The CCN part alone: D_RI of the Q x K candidate pairs, each candidate read once.
            uniq, inverse = np.unique(cand.numpy(), return_inverse=True)
            g_cand = torch.from_numpy(gal.take_F(uniq))
            qi = torch.arange(args.queries).repeat_interleave(cand.shape[1])
            gi = torch.from_numpy(inverse.reshape(-1).astype(np.int64))

            def rerank() -> None:
                rerank_mode.topk(q_all, gal, args.rerank_k, ccn=ccn, query_side="b",
                                 topk=args.rerank_k)

            t = best_time(rerank, args.repeats)
            t_ccn = best_time(lambda: full_pair_fn(ccn, q_all.F, g_cand, "b")(qi, gi),
                              args.repeats)
            out.append(record(geom, "rerank", args.queries, n, t, args.queries * args.rerank_k,
                              rerank_k=args.rerank_k, ccn_seconds=round(t_ccn, 5)))
            print(out[-1], flush=True)
        qT = torch.from_numpy(qF)
        for n in sizes_f:
            gT = torch.from_numpy(gF_all[:n])
            t = best_time(lambda: score_full(ccn, qT, gT, query_side="b", chunk_size=256),
                          args.repeats if n * args.queries < 2e6 else 1)
            out.append(record(geom, "full", args.queries, n, t, args.queries * n))
            print(out[-1], flush=True)
    return out


def run_sharded(args: argparse.Namespace) -> list[dict[str, Any]]:
    info = D.init_from_env(device="cpu")
    out = []
    fastccn.warmup()
    for geom in args.geometries:
        shape = GEOMETRIES[geom]
        torch.manual_seed(0)
        ccn = CCN(shape[0], shape[1:]).eval()
        for n in args.sharded_sizes[geom]:
            gF = torch.from_numpy(features(n, shape, 1))
            qF = torch.from_numpy(features(args.queries, shape, 2))
            D.barrier()
            t = best_time(lambda: score_sharded(ccn, qF, gF, query_side="b", chunk_size=32),
                          1)
            out.append(record(geom, f"full-sharded-{info.world_size}ranks", args.queries, n, t,
                              args.queries * n, threads_per_rank=torch.get_num_threads()))
            if D.is_main():
                print(out[-1], flush=True)
    D.cleanup()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=None, help="write the records here (atomically)")
    ap.add_argument("--quick", action="store_true", help="small sizes only")
    ap.add_argument("--geometries", nargs="+", default=["cpu", "paper"], choices=list(GEOMETRIES))
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--rerank-k", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sharded-only", action="store_true",
                    help="time score_sharded (run under torchrun)")
    args = ap.parse_args()
    if args.quick:
        args.simplified_sizes = {"cpu": [1000, 10000], "paper": [1000, 10000]}
        args.full_sizes = {"cpu": [1000, 4000], "paper": [250, 1000]}
        args.sharded_sizes = {"cpu": [4000], "paper": [1000]}
    else:
        args.simplified_sizes = {"cpu": [1000, 10000, 100000, 1000000],
                                 "paper": [1000, 10000, 100000]}
        args.full_sizes = {"cpu": [1000, 10000, 100000], "paper": [1000, 4000, 16000]}
        args.sharded_sizes = {"cpu": [10000], "paper": [4000]}
    records = run_sharded(args) if args.sharded_only else run_single(args)
    if args.json and D.is_main():
        from vireid.utils.atomic import atomic_write_text

        meta = {"machine": platform.machine(), "cpus": os.cpu_count(),
                "load_average_at_end": os.getloadavg(), "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(), "faiss": faiss_available(),
                "numba": fastccn.numba_available()}
        atomic_write_text(args.json, json.dumps({"meta": meta, "records": records}, indent=1) + "\n")


if __name__ == "__main__":
    main()
