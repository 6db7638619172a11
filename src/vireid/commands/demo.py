"""``vireid demo``: synthetic data → train the paper's method, two baselines and the best
recipe → evaluate → report."""
from __future__ import annotations

import argparse

from ._checks import check_output_folder, seed_type


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the whole pipeline on synthetic data (≤ 15 min on a 2-core CPU)",
        description="Generate a synthetic SYSU-layout dataset; train, with the same backbone, "
                    "start and budget, the paper's method (DSCSN+CCN), the ID-loss-only "
                    "baseline, the AGW baseline and the toolkit's best recipe (a CCN head on the "
                    "frozen AGW model); "
                    "evaluate them on the 10 SYSU all-search trials (the paper's simplified, "
                    "full and rerank scoring; AGW with and without k-reciprocal re-ranking; the "
                    "best recipe with its preset's scoring and k-reciprocal re-ranking); and "
                    "write a report folder that marks the paper's method and the best recipe.")
    p.add_argument("-o", "--output", default="demo-out", help="report folder (default demo-out)")
    p.add_argument("--quick", action="store_true",
                   help="a 1-2 minute smoke run (tiny data and budget; numbers meaningless)")
    p.add_argument("--seed", type=seed_type, default=0, help="seed of the data and the training")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # late: keeps `vireid --help` fast (the library imports torch, ~1.7 s)
    from ..apps.demo import run_demo

    check_output_folder(args.output, "-o")

    out = run_demo(args.output, quick=args.quick, seed=args.seed,
                   progress=not args.no_progress and not getattr(args, "quiet", False))
    print((out / "results.md").read_text())
    print(f"report: {out / 'results.md'} (also results.json, cmc.png, loss_curves.png)")
    return 0
