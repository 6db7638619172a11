"""GPU measurements of issue 17, one JSON file per step in OUT (called by gpu_check.sh).

Steps (each in its own try, so one failure does not lose the others):
  full_<backend>   RegDB 2060 x 2060 full mode at the paper geometry, each GPU backend
  triton_blocks    the triton kernel with other tile sizes, 1024 x 1024
  train_<amp>      paper-model training images/s, fp32 / bf16 / fp16 autocast
  extract          extraction images/s
  end_to_end       a whole RegDB-sized evaluation on the GPU
Usage: python benchmarks/gpu_check.py OUT [--quick]
"""
import argparse
import json
import os
import sys
import time
import traceback

import torch

from vireid.apps import bench_models as bench
from vireid.scoring import fastccn


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a dry run of the script)")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    dev = args.device
    q = args.quick
    n = 64 if q else bench.REGDB_N
    steps = {
        "environment": lambda: {"torch": torch.__version__, "cuda": torch.version.cuda,
                                "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                                "triton": fastccn.triton_available()},
        **{f"full_{b}": (lambda b=b: bench.bench_full_device(n, dev, b, chunk_size=256 if not q else 16))
           for b in (["triton", "torch"] if dev == "cuda" else ["numba", "torch"])},
        "train_fp32": lambda: bench.bench_train_step(2 if q else 32, 1 if q else 10, dev, "off", warmup=1 if q else 3),
        "train_bf16": lambda: bench.bench_train_step(2 if q else 32, 1 if q else 10, dev, "bf16", warmup=1 if q else 3),
        "train_fp16": lambda: bench.bench_train_step(2 if q else 32, 1 if q else 10, dev, "fp16", warmup=1 if q else 3),
        "extract": lambda: bench.bench_extract(4 if q else 256, 1 if q else 10, dev),
        "end_to_end": lambda: bench.bench_end_to_end(8 if q else 2 * bench.REGDB_N, batch=4 if q else 256,
                                                     device=dev),
    }
    if dev == "cuda" and fastccn.triton_available():
        from vireid.scoring import triton_full

        def blocks():
            feats = torch.rand(2 * 1024, 2048 * 32, device=dev)
            w = torch.randn_like(feats)
            out = {}
            for bl in [(32, 32, 8, 4), (64, 64, 4, 4), (64, 32, 8, 8), (16, 16, 16, 4), (128, 64, 2, 8)]:
                triton_full.weighted_l1_triton(feats[:64], w[:64], feats[1024:1088], w[1024:1088], bl)
                torch.cuda.synchronize()
                t = time.perf_counter()
                triton_full.weighted_l1_triton(feats[:1024], w[:1024], feats[1024:], w[1024:], bl)
                torch.cuda.synchronize()
                out[str(bl)] = time.perf_counter() - t
            return {"seconds_1024x1024": out}
        steps["triton_blocks"] = blocks
    failed = 0
    for name, fn in steps.items():
        t0 = time.perf_counter()
        try:
            res = fn()
            res = {"ok": True, "wall_s": time.perf_counter() - t0, **res}
        except Exception as exc:  # record and go on: the other figures still count
            failed += 1
            res = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        if dev == "cuda" and torch.cuda.is_available():
            res["process_peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated()
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            json.dump(res, f, indent=2)
        print(f"{name}: {'ok' if res['ok'] else res['error']} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
