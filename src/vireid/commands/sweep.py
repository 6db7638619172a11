"""``vireid sweep``: train a grid of configs, select on held-out training ids only."""
from __future__ import annotations

import argparse
import json

from ._checks import threads_type


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="hyperparameter grid judged on validation ids carved from the training ids",
        description="Train every point of a grid (Cartesian product of --grid KEY=V1,V2,...) "
                    "from one preset with train.selection=val and data.val_ids=K, and write "
                    "OUT/sweep.md and OUT/sweep.json: validation rank-1/mAP per point and the "
                    "chosen point. Test ids are never read. Fixed KEY=VALUE overrides follow "
                    "the options.")
    p.add_argument("--config", required=True, help="preset name or YAML file")
    p.add_argument("--data-root", required=True, help="dataset folder (sets data.root)")
    p.add_argument("-o", "--output", required=True, help="sweep folder (runs/, sweep.md, sweep.json)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="one grid axis (repeatable); commas inside [...] do not split")
    p.add_argument("--val-ids", type=int, default=60,
                   help="training ids held out for validation (data.val_ids; default 60)")
    p.add_argument("--criterion", choices=("last", "best"), default="last",
                   help="score (val rank-1 + mAP)/2 at the last epoch or at the best-rank-1 "
                        "epoch (default last)")
    p.add_argument("--jobs", type=int, default=1, help="points trained at once (default 1)")
    p.add_argument("--threads", type=threads_type, default=1, help="torch threads per point (default 1)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="fixed dotted overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # late: keeps `vireid --help` fast (the library imports torch, ~1.7 s)
    from ..apps.sweep import format_table, parse_grid, run_sweep

    res = run_sweep(args.config, parse_grid(args.grid), args.output, data_root=args.data_root,
                    fixed=args.overrides, val_ids=args.val_ids, criterion=args.criterion,
                    jobs=args.jobs, threads=args.threads)
    print(json.dumps(res.to_dict(), indent=2) if args.json else format_table(res).rstrip())
    return 0
