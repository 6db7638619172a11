#!/usr/bin/env python
"""Rerank trade-off (issue 6 item 3): accuracy and scoring time of rerank top-K against full mode.

    python benchmarks/bench_rerank.py --checkpoint RUN_DIR --data-root DIR \
        [--protocol sysu-all-multi] [--topk 10,20,50,100,all] [--repeats 3] [--json OUT]

Features are extracted once (saved next to the JSON), then every scoring mode is timed on
them; each time is the minimum over ``--repeats`` runs. Prints a markdown table and the
smallest K whose rank-1 is within 0.5 points of full mode.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from vireid.utils.atomic import atomic_write_text
from vireid.engine.evaluate import evaluate


def _run(args: argparse.Namespace, feats: Path, scoring: str, topk: int | None) -> dict:
    best = None
    for _ in range(args.repeats):
        res = evaluate([args.checkpoint], protocol=args.protocol, scoring=scoring, topk=topk,
                       trials=args.trials, features_paths=[feats])
        if best is None or res["seconds"]["scoring"] < best["seconds"]["scoring"]:
            best = res
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--protocol", default="sysu-all-multi")
    ap.add_argument("--topk", default="10,20,50,100,all")
    ap.add_argument("--trials", default="0", help="comma-separated trials (default 0)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    args.trials = [int(t) for t in args.trials.split(",")]
    work = Path(args.json).parent if args.json else Path(tempfile.mkdtemp())
    feats = work / "rerank-features.pt"
    evaluate([args.checkpoint], data_root=args.data_root, protocol=args.protocol,
             scoring="simplified", trials=args.trials, save_features_path=feats)
    rows = []
    for label, scoring, k in ([("simplified", "simplified", None), ("full", "full", None)]
                              + [(f"rerank top-{k}", "rerank", None if k == "all" else int(k))
                                 for k in args.topk.split(",")]):
        if scoring == "rerank" and k is None:
            k = 10 ** 9  # every gallery item: equals full mode
        res = _run(args, feats, scoring, k)
        rows.append({"mode": label, "topk": k, "rank1": res["mean"]["rank1"],
                     "mAP": res["mean"]["mAP"], "scoring_s": res["seconds"]["scoring"]})
    full_r1 = next(r["rank1"] for r in rows if r["mode"] == "full")
    within = [r["topk"] for r in rows if r["mode"].startswith("rerank") and r["rank1"] >= full_r1 - 0.5]
    out = {"checkpoint": args.checkpoint, "protocol": args.protocol, "trials": args.trials,
           "rows": rows, "smallest_k_within_0.5_rank1_of_full": min(within) if within else None}
    print("| mode | rank-1 | mAP | scoring s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['rank1']:.2f} | {r['mAP']:.2f} | {r['scoring_s']:.3f} |")
    print(f"smallest K within 0.5 rank-1 points of full: {out['smallest_k_within_0.5_rank1_of_full']}")
    if args.json:
        atomic_write_text(args.json, json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
